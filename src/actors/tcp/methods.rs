//! Which method names a listener accepts off the wire.
//!
//! A [`Dispatch`](crate::messages::net::Dispatch) names its method with a `&'static str`,
//! while a frame carries an owned string. Rather than leak every string a peer sends, each
//! listener is given the list of methods its services handle (straight from their
//! [`Rpc::METHOD`] constants) and maps a wire name back to the registered constant; a name that
//! is not on the list is an unknown method.

use std::collections::HashSet;

use crate::messages::net::Rpc;

/// The method names a listener serves.
#[derive(Debug, Clone, Default)]
pub struct MethodTable {
    names: HashSet<&'static str>,
}

impl MethodTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the method of request type `R`.
    pub fn with<R: Rpc>(self) -> Self {
        self.with_name(R::METHOD)
    }

    /// Adds a method by name (`"Service.Method"`).
    pub fn with_name(mut self, method: &'static str) -> Self {
        self.names.insert(method);
        self
    }

    /// The registered constant for a method name read off the wire.
    pub fn resolve(&self, wire_name: &str) -> Option<&'static str> {
        self.names.get(wire_name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::kv::{GetArgs, PutAppendArgs};

    #[test]
    fn wire_names_resolve_to_the_registered_constants() {
        let table = MethodTable::new().with::<GetArgs>().with::<PutAppendArgs>();
        let wire = String::from("KVServer.Get");
        assert_eq!(table.resolve(&wire), Some(GetArgs::METHOD));
        assert_eq!(table.resolve("KVServer.Delete"), None);
        let table = table.with_name("Admin.Status");
        assert_eq!(
            table.resolve("KVServer.PutAppend"),
            Some(PutAppendArgs::METHOD)
        );
        assert_eq!(table.resolve("Admin.Status"), Some("Admin.Status"));
    }
}
