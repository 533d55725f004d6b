"""The edge node: runs the intermediate blocks [b_d, b_e) for many devices and relays to the cloud."""
