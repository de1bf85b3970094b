//! Every typed message that crosses an actor boundary, grouped by protocol.
//!
//! - [`net`]: the simulated network's envelope ([`net::Dispatch`]), its control messages and the
//!   [`net::Rpc`] trait that ties a request type to its reply type.

pub mod net;
