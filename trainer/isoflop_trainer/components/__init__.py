"""The named parts of the Trainer (isoflop_trainer.trainer), each testable alone."""
