//! steadfast-core: the sans-IO delivery engine of steadfast.
//!
//! No sockets, no clock, no randomness of its own: the driver feeds inputs
//! (frames, time, hints) and drains outputs. See docs/ARCHITECTURE.md.
