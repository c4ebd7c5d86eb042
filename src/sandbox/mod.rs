//! The sandbox: the real bot against an embedded Discord emulator, with a web page to drive it.

pub mod emulator;
