"""The cluster side: the kopf operator, the pure builders of its child objects, admission,
the installation's policy, the trial records and the operator's own metrics.

Run it as `kopf run -m isoflop.cluster.handlers`; importing this package registers nothing."""
