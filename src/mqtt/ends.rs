//! What the other tasks hold of a connection: its client (requests go through its bounded
//! channel to the event loop), whether its session is up, and whether its event loop has
//! returned.

use rumqttc::AsyncClient;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One connection as the publisher and the ack task see it: its client, whether its session is up, and a
/// token cancelled when its event loop has returned.
#[derive(Clone)]
pub(crate) struct ConnectionEnds {
    pub(crate) client: AsyncClient,
    pub(crate) connected: watch::Receiver<bool>,
    pub(crate) stopped: CancellationToken,
}

/// The connections: `input` subscribes (and carries the PUBACKs); `output`, when there is a
/// second connection, carries the outputs. Without it `input` does both.
pub(crate) struct Ends {
    pub(crate) input: ConnectionEnds,
    pub(crate) output: Option<ConnectionEnds>,
}
