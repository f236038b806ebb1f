//! Running tasks: the container runtime and the per-task state machine.
