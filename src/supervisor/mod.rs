//! The supervisor: `core` decides (pure), the other modules do the I/O it asks for, and `run`
//! is the driver loop that ties them together.

pub mod children;
pub mod core;
pub mod output;
pub mod ready;
pub mod reaper;
pub mod run;
pub mod signals;
pub mod spawn;
pub mod strays;
