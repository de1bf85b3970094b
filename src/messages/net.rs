//! The network protocol: how a request travels from a client end to a service and back.
//!
//! Every RPC is encoded once with rmp-serde by the caller ([`encode`]), routed as bytes by the
//! network actor (which counts them and, by carrying bytes, guarantees a deep copy the way
//! labgob does) and decoded by the receiving service ([`decode`]). A request type names its
//! method and reply type through the [`Rpc`] trait, so callers and handlers stay typed while the
//! network stays ignorant of every service.
//!
//! The control messages (`MakeEnd`, `Connect`, `Enable`, `AddServer`, …) follow labrpc's
//! vocabulary; see `actors::network` for their semantics.

use std::collections::BTreeMap;
use std::fmt;

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

/// Name of a client end (labrpc's `ClientEnd` name).
pub type EndName = String;
/// Name of a server registered on the network (for example `"0"` or `"server-100-2"`).
pub type ServerName = String;

/// Why a call did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcError {
    /// The request or reply was lost, the end is disabled or unconnected, or the server is dead:
    /// exactly the cases where labrpc's `Call` returns false.
    Unreachable,
    /// No service on the server handles this method (labrpc kills the process here).
    UnknownMethod(String),
    /// Bytes that did not decode as the expected type.
    Codec(String),
    /// The network actor is gone (the simulation was shut down).
    NetworkDown,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::Unreachable => write!(f, "call failed: peer unreachable or message lost"),
            RpcError::UnknownMethod(m) => write!(f, "no service handles method {m}"),
            RpcError::Codec(e) => write!(f, "bad message encoding: {e}"),
            RpcError::NetworkDown => write!(f, "network is shut down"),
        }
    }
}

impl std::error::Error for RpcError {}

/// A request type: names the method that handles it and the type of its reply.
///
/// `METHOD` is `"Service.Method"`; the part before the dot picks the service on the server.
pub trait Rpc: Serialize + DeserializeOwned + Send + 'static {
    /// Full method name, e.g. `"Raft.AppendEntries"`.
    const METHOD: &'static str;
    /// The reply the handler returns.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// About how many bytes of payload (commands, values, snapshot data) the request
    /// carries, so that [`encode_request`] allocates once instead of growing its buffer
    /// step by step. Zero for small requests.
    fn payload_len(&self) -> usize {
        0
    }
}

/// Encodes a request or reply for the wire.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RpcError> {
    rmp_serde::to_vec(value).map_err(|e| RpcError::Codec(e.to_string()))
}

/// Encodes a request for the wire into a buffer sized for its payload.
pub fn encode_request<R: Rpc>(args: &R) -> Result<Vec<u8>, RpcError> {
    const FIELDS: usize = 128;
    let mut bytes = Vec::with_capacity(FIELDS + args.payload_len());
    rmp_serde::encode::write(&mut bytes, args).map_err(|e| RpcError::Codec(e.to_string()))?;
    Ok(bytes)
}

/// Decodes bytes that came off the wire; a malformed message is an error, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    rmp_serde::from_slice(bytes).map_err(|e| RpcError::Codec(e.to_string()))
}

/// The service name of a `"Service.Method"` string.
pub fn service_of(method: &str) -> &str {
    method
        .split_once('.')
        .map_or(method, |(service, _)| service)
}

/// What the network hands to a service: one encoded request. The handler answers with the
/// encoded reply, or an error if it could not produce one.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<u8>, RpcError>")]
pub struct Dispatch {
    /// Full method name, `"Service.Method"`.
    pub method: &'static str,
    /// The rmp-serde encoded request.
    pub args: Vec<u8>,
}

impl Dispatch {
    /// Decodes the request as `R`.
    pub fn decode<R: Rpc>(&self) -> Result<R, RpcError> {
        decode(&self.args)
    }
}

/// The services one server offers, keyed by service name (`"Raft"`, `"KVServer"`, …).
#[derive(Clone, Default)]
pub struct Server {
    /// Service name → the actor that handles its methods.
    pub services: BTreeMap<String, Recipient<Dispatch>>,
}

impl Server {
    /// A server with no services yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a service.
    pub fn with_service(mut self, name: &str, handler: Recipient<Dispatch>) -> Self {
        self.services.insert(name.to_string(), handler);
        self
    }
}

/// A call entering the network on a client end; the outcome goes to `reply_to`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Call {
    /// The client end the call is made on.
    pub end: EndName,
    /// Full method name.
    pub method: &'static str,
    /// Encoded request.
    pub args: Vec<u8>,
    /// Receives the encoded reply or the failure.
    pub reply_to: oneshot::Sender<Result<Vec<u8>, RpcError>>,
}

/// Identifies a call for its whole life in the simulated network.
pub(crate) type CallId = u64;

/// A service's handler finished a call (sent to the simulated network by the task that awaited
/// it).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct HandlerDone {
    pub call: CallId,
    pub result: Result<Result<Vec<u8>, RpcError>, MailboxError>,
}

/// Creates a client end, disabled and unconnected. A duplicate name is an error.
#[derive(Message)]
#[rtype(result = "Result<(), NetError>")]
pub struct MakeEnd {
    /// The new end's name.
    pub name: EndName,
    /// The server the end belongs to, if any: one-way link cuts and partitions use it.
    pub owner: Option<ServerName>,
}

/// Removes a client end; calls on it fail from then on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeleteEnd(pub EndName);

/// Points a client end at a server.
#[derive(Message)]
#[rtype(result = "Result<(), NetError>")]
pub struct Connect {
    /// The end.
    pub end: EndName,
    /// The server it reaches.
    pub server: ServerName,
}

/// Enables or disables a client end.
#[derive(Message)]
#[rtype(result = "Result<(), NetError>")]
pub struct Enable {
    /// The end.
    pub end: EndName,
    /// Whether calls on it may reach its server.
    pub enabled: bool,
}

/// Installs a server under a name, replacing (and thereby killing) any previous one.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddServer {
    /// The name ends connect to.
    pub name: ServerName,
    /// Its services.
    pub server: Server,
}

/// Deletes a server: it is dead, and replies from handlers still running are dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeleteServer(pub ServerName);

/// Cuts or restores the one-way link `from → to` between two servers (beyond labrpc): nothing
/// `from` sends reaches `to`. Calls on ends owned by `from` and connected to `to` fail as if the
/// end were disabled; calls `to` makes to `from` are delivered and handled, but their replies
/// are lost and the caller sees a failure.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetLink {
    /// The sending server.
    pub from: ServerName,
    /// The server that no longer hears it.
    pub to: ServerName,
    /// `false` cuts the link.
    pub up: bool,
}

/// Partitions servers into groups in one step: links inside a group work, links across groups
/// are cut in both directions, servers not listed keep their links.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Partition(pub Vec<Vec<ServerName>>);

/// Network-wide fault settings.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub enum SetFaults {
    /// Unreliable: short delays and 10% request and reply loss.
    Reliable(bool),
    /// Calls that cannot be delivered fail after 0–6999 ms instead of 0–99 ms.
    LongDelays(bool),
    /// Two thirds of replies are held for 200–2199 ms.
    LongReordering(bool),
    /// One request in ten that is delivered is delivered a second time, a short random delay
    /// later; the copy's reply is discarded (beyond labrpc).
    Duplicates(bool),
}

/// Asks for the network's counters.
#[derive(Message, Debug, Clone)]
#[rtype(result = "u64")]
pub enum GetCount {
    /// RPCs that reached this server's dispatch (labrpc `GetCount`).
    Server(ServerName),
    /// Every call that entered the network (labrpc `GetTotalCount`).
    TotalCalls,
    /// Encoded request bytes of every call plus the bytes of delivered replies.
    TotalBytes,
    /// The 64-bit hash over every network event so far (see `RAINKV_TRACE_HASH`).
    TraceHash,
}

/// A misuse of the network's control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// `MakeEnd` with a name that already exists.
    DuplicateEnd(EndName),
    /// The end does not exist.
    NoSuchEnd(EndName),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::DuplicateEnd(name) => write!(f, "client end {name:?} already exists"),
            NetError::NoSuchEnd(name) => write!(f, "no client end named {name:?}"),
        }
    }
}

impl std::error::Error for NetError {}
