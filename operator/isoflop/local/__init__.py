"""The local runner: a sweep on one machine (`isoflop run`), its backends, devices and lock."""
