//! Worker role.
