"""The device page in a real headless Chromium (issue 33): a fake camera plays a video of known
held-out digits; the page enrols with an operator's code, runs the device partition in
onnxruntime-web and streams through the edge node and the cloud over TLS. Every answer must equal
the Python agent's for the same image at the same split, and the uplink must carry activations.

Skips, saying so, only where Chromium or its driver is not installed, or where onnxruntime-web was
not built into the package (`make browser-assets`, which `make test` runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from browser_tiers import CHROMIUM, DRIVER, BrowserTiers, chromium, start_browser_tiers, stop_browser_tiers, wait_for, write_y4m
from ecd import codec, zoo
from ecd.partition import Partition
from ecd.types import Encoding
from edge_node.browser import STATIC

IMAGES = 24  # known held-out digits in the fake camera's video


@pytest.fixture(scope="module")
def tiers(tmp_path_factory: pytest.TempPathFactory):
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("needs Chromium and its driver (Debian: apt-get install chromium chromium-driver); not installed here")
    if not (STATIC / "ort" / "ort.wasm.min.js").is_file():
        pytest.skip("needs onnxruntime-web in edge_node/browser_static/ort: run `make browser-assets` (needs npm)")
    t = start_browser_tiers(tmp_path_factory.mktemp("device-page"))
    yield t
    stop_browser_tiers(t)


def state(driver) -> str:
    return driver.execute_script("return document.getElementById('state').dataset.state")


def expected_output(manifest, pixels: np.ndarray, split: int, encoding: Encoding) -> np.ndarray:
    x = manifest.input.preprocess(pixels[None])
    sent = codec.encode(Partition(manifest, 0, split).run(x), encoding)
    return Partition(manifest, split, manifest.n_blocks).run(codec.decode(sent, manifest.activation_shape(split), 1 << 30))[0]


def test_the_page_streams_100_frames_with_the_python_agents_answers(tiers: BrowserTiers, tmp_path: Path) -> None:
    manifest = zoo.load_manifest("digits_cnn")
    heldout = np.load(zoo.model_dir("digits_cnn") / "heldout.npz")
    video = tmp_path / "digits.y4m"
    write_y4m(video, heldout["images"][:IMAGES])
    received = []  # what the edge node took from the page: (encoding, shape) of each frame's tensor
    prepare = tiers.edge.core.prepare_many

    async def spy(frames, holder="", meter=None):
        received.extend((frame.tensor.encoding, tuple(frame.tensor.shape), holder) for frame in frames)
        return await prepare(frames, holder, meter)

    tiers.edge.core.prepare_many = spy
    driver = chromium(tmp_path, tiers, video)
    try:
        driver.get(f"{tiers.page_url}?code={tiers.code()}&debug=1&fps=40&window=4")
        wait_for(driver, "return document.getElementById('state').dataset.state === 'NOT_ENROLLED'", "the enrol form")
        driver.execute_script("document.getElementById('min_split').value = 2; document.getElementById('split').value = 2")
        driver.find_element("css selector", "#enrol button").click()
        wait_for(driver, "return window.ecdPage.answered >= 30", "30 answers")
        driver.execute_script("window.ecdPage.ws.close(4000)")  # the network drops the socket: it comes back by itself
        wait_for(driver, "return window.ecdPage.answered >= 110", "110 answers")
        debug = driver.execute_script("""
            const d = window.ecdDebug;
            return {frames: Array.from(d.frames, ([id, f]) => [id, f]),
                    results: d.results.map(r => ({id: r.frameId, output: r.output, error: r.error, split: r.splitDevice}))};""")
        driver.save_screenshot(str(tmp_path / "device-page.png"))
        errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    finally:
        driver.quit()
        tiers.edge.core.prepare_many = prepare
    assert not errors, errors
    frames = {int(i): f for i, f in debug["frames"]}
    results = debug["results"]
    ids = [r["id"] for r in results]
    assert len(ids) >= 110 and len(set(ids)) == len(ids), "a frame answered twice"
    split = results[0]["split"]
    assert split == 2  # pinned on the page (no defence noise there): the edge runs blocks 2..5, the cloud the head
    labels = set()
    for r in results:
        assert r["error"] is None, r["error"]
        pixels = np.asarray(frames[r["id"]]["pixels"], np.uint8).reshape(32, 32)
        want = expected_output(manifest, pixels, split, Encoding.FLOAT16)
        # onnxruntime-web and onnxruntime differ in float32's last bits; where that crosses a float16
        # rounding boundary at the split, an element moves by one float16 step (~1e-3 relative)
        np.testing.assert_allclose(r["output"], want, rtol=1e-2, atol=1e-2)
        assert int(np.argmax(r["output"])) == int(np.argmax(want))
        labels.add(int(np.argmax(want)))
    assert len(labels) >= 5, "the fake camera's digits did not come through"
    activation = (1, *manifest.activation_shape(split))
    ours = [r for r in received if r[2].startswith("browser:")]
    assert len(ours) >= len(results)
    assert all(enc is Encoding.FLOAT16 and shape == activation for enc, shape, _ in ours), set(ours[:3])  # never the raw image


def enrolled(driver, tiers: BrowserTiers, split: int = -1) -> None:
    driver.get(f"{tiers.page_url}?code={tiers.code()}&debug=1&fps=40&window=2")
    wait_for(driver, "return document.getElementById('state').dataset.state === 'NOT_ENROLLED'", "the enrol form")
    driver.execute_script(f"document.getElementById('split').value = {split}")
    driver.find_element("css selector", "#enrol button").click()


def test_a_denied_camera_is_said_on_the_page(tiers: BrowserTiers, tmp_path: Path) -> None:
    driver = chromium(tmp_path, tiers, None, camera=False)
    try:
        enrolled(driver, tiers)
        wait_for(driver, "return document.getElementById('state').dataset.state === 'CAMERA_DENIED'", "the camera-denied state")
        assert "allow the camera" in driver.find_element("id", "state").text
        assert driver.execute_script("return window.ecdPage.ws") is None  # nothing streams without a camera
    finally:
        driver.quit()


def test_a_hidden_tab_pauses_the_network_comes_back_and_a_reopened_page_goes_on(tiers: BrowserTiers, tmp_path: Path) -> None:
    """Hidden: no frame is sent until it is shown again. Offline: the page says so and reconnects
    once online. Closed and opened again: the same device (its key from IndexedDB, never
    extractable), frame ids going on from where they were, nothing answered twice. New weights:
    the device re-splits between two sessions, no frame refused."""
    driver = chromium(tmp_path, tiers, None)
    try:
        enrolled(driver, tiers, split=3)  # where the Python agent adds defence noise: so does the page
        wait_for(driver, "return window.ecdPage.answered >= 5", "5 answers")
        noisy = driver.execute_script("const d = window.ecdDebug;"
                                      "return d.results.map(r => [d.frames.get(r.frameId).pixels, r.output, r.splitDevice])")
        manifest = zoo.load_manifest("digits_cnn")
        for pixels, output, split in noisy:
            clean = expected_output(manifest, np.asarray(pixels, np.uint8).reshape(32, 32), split, Encoding.FLOAT16)
            assert split == 3 and np.abs(np.asarray(output) - clean).max() > 0.05  # Laplace noise of scale ~0.63 at split 3
        driver.execute_script("Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
                              "document.dispatchEvent(new Event('visibilitychange'))")
        assert state(driver) == "PAUSED"
        wait_for(driver, "return window.ecdPage.unanswered.size === 0", "the frames in flight answered")
        sent, ticks = driver.execute_script("return [window.ecdDebug.frames.size, window.ecdPage.ticks]")
        wait_for(driver, f"return window.ecdPage.ticks >= {ticks + 20}", "20 ticks of the page's timer")
        assert driver.execute_script("return window.ecdDebug.frames.size") == sent  # nothing sent while hidden
        driver.execute_script("Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
                              "document.dispatchEvent(new Event('visibilitychange'))")
        wait_for(driver, f"return window.ecdDebug.frames.size > {sent + 3}", "frames again once shown")

        driver.set_network_conditions(offline=True, latency=0, download_throughput=-1, upload_throughput=-1)
        wait_for(driver, "return document.getElementById('state').dataset.state === 'OFFLINE'", "the offline state")
        driver.set_network_conditions(offline=False, latency=0, download_throughput=-1, upload_throughput=-1)
        answered = driver.execute_script("return window.ecdPage.answered")
        wait_for(driver, f"return window.ecdPage.answered > {answered + 5}", "answers after the network came back")

        device, last = driver.execute_script("return [window.ecdPage.enrolment.device_id, Math.max(...window.ecdDebug.frames.keys())]")
        extractable = driver.execute_async_script("const done = arguments[0];"
                                                  "crypto.subtle.exportKey('pkcs8', window.ecdPage.key.privateKey).then(() => done(true), () => done(false))")
        assert extractable is False
        driver.get(f"{tiers.page_url}?debug=1&fps=40&window=2")  # the page closed and opened again
        wait_for(driver, "return window.ecdPage.answered >= 3", "answers on the reopened page")
        again, first = driver.execute_script("return [window.ecdPage.enrolment.device_id, Math.min(...window.ecdDebug.frames.keys())]")
        assert again == device and first > last
        driver.find_element("css selector", "#prefs summary").click()  # new weights: a raised floor re-splits the device
        driver.execute_script("document.getElementById('p_floor').value = 4")
        driver.find_element("id", "apply").click()
        wait_for(driver, "return window.ecdPage.assignment.split_device >= 4 && window.ecdPage.state === 'streaming'", "the new split")
        assert driver.execute_script("return window.ecdPage.enrolment.split_device") >= 4  # kept for the next reload
        answered = driver.execute_script("return window.ecdPage.answered")
        wait_for(driver, f"return window.ecdPage.answered > {answered + 3}", "answers at the new split")
        results = driver.execute_script("return window.ecdDebug.results.map(r => [r.frameId, r.error])")
        assert all(error is None for _, error in results), [e for _, e in results if e]
    finally:
        driver.quit()
