"""Schedulers for crowdsensing: one interface per kind of decision.

* **placement** (paper 003) — an instance of servers, data types and users → which servers to
  activate for which type and where each user uploads: :func:`scheduling.placement.solve`
  (``METHODS``), JSON / OR-Library readers in :mod:`scheduling.placement.io`.
* **allocation** (papers 002, 004) — participants and tasks → an allocation:
  :func:`scheduling.allocation.allocate` (``METHODS`` per problem: TAPP, coverage-aware), JSON
  readers in :mod:`scheduling.allocation.io`.
* **quality** (paper 001) — participants' reports → data qualities, reputations and outliers:
  :func:`scheduling.quality.assess` (``METHODS``), plus CrowdPower site selection; JSON readers in
  :mod:`scheduling.quality.io`.

Plain dataclasses in and out; every error is a :class:`scheduling.errors.SchedulingError` (an
:class:`ecd.errors.EcdError`) whose one-line message names the field. The package needs numpy and
scipy only (the ``cloud`` extra) and never imports the research code, the CLI or plotting.
"""
