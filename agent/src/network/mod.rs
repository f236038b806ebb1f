//! Task networking: the node bridge, a network namespace and an address per task.
