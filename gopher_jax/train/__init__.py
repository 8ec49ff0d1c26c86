"""Training: configs, optimizer and schedules, loss, sharded train step, checkpoints, the loop."""
