//! The write side's front door: the bus every command goes through (role check,
//! load, decide, commit; [`bus`]), the clock commands are issued by, and the
//! per-aggregate entry points the API and the workflows call ([`domain`]).

pub mod bus;
pub mod clock;
pub mod domain;
