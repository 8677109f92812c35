use std::{
    marker::PhantomData,
    sync::{Arc, Mutex},
    vec,
};

use burn_communication::{CommunicationChannel, Message, Protocol, ProtocolClient};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, RwLock};

use crate::{NodeId, global::shared::GlobalCollectiveError, node::base::NodeState};

/// qzhou patch: how long a sync waits between checks that the nodes it still waits for are alive.
const LIVENESS_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

/// Handles the status of sync requests from other nodes
pub(crate) struct SyncService<P: Protocol> {
    /// Current node's state, shared with the thread that does aggregations
    node_state: Arc<RwLock<Option<NodeState>>>,
    /// The number of peers that have requested to sync with us since the last successful sync.
    syncing_peers: Mutex<Vec<NodeId>>,
    /// Notification on each incoming sync request
    sync_notif: Notify,

    _p: PhantomData<P>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SyncRequest(NodeId);

impl<P: Protocol> SyncService<P> {
    pub fn new(node_state: Arc<RwLock<Option<NodeState>>>) -> Self {
        Self {
            node_state,
            syncing_peers: Mutex::new(vec![]),
            sync_notif: Notify::new(),
            _p: PhantomData,
        }
    }

    fn add_syncing_peer(&self, peer: NodeId) {
        let mut syncing_peers = self.syncing_peers.lock().unwrap();
        syncing_peers.push(peer);
    }

    /// Sync with all peers.
    ///
    /// qzhou patch: fails with `PeerLost` when a node it waits for has gone (its port refuses
    /// connections) instead of waiting for ever: a node killed between this node's sync request
    /// and its own holds no connection to this one whose reset could say so.
    pub async fn sync(&self) -> Result<(), GlobalCollectiveError> {
        // we can't sync while we register
        let node_state = self.node_state.read().await;
        let node_state = node_state
            .as_ref()
            .expect("Trying to sync a node before having registered to the orchestrator");

        // this peer is syncing
        self.add_syncing_peer(node_state.node_id);
        for (id, addr) in &node_state.nodes {
            if *id == node_state.node_id {
                continue;
            }

            let mut connection = P::Client::connect(addr.clone(), "sync")
                .await
                .expect("Couldn't connect to peer for sync");
            let msg = SyncRequest(node_state.node_id);
            let sync_bytes = rmp_serde::to_vec(&msg).unwrap();
            connection
                .send(Message::new(sync_bytes.into()))
                .await
                .expect("Peer closed connection unexpectedly");
        }
        loop {
            // qzhou patch: register for the wake-up *before* checking, so a sync request that
            // arrives between the check and the wait is not lost (`notify_waiters` keeps no
            // permit).
            let mut notified = std::pin::pin!(self.sync_notif.notified());
            notified.as_mut().enable();
            {
                // compare currently synced peers with list of all nodes
                let mut guard = self.syncing_peers.lock().unwrap();
                let mut syncing_peers = guard.to_vec();
                syncing_peers.sort();

                let mut all_node_ids = node_state.nodes.keys().cloned().collect::<Vec<_>>();
                all_node_ids.sort();

                if syncing_peers == all_node_ids {
                    // all nodes have synced
                    // qzhou patch: clear the shared list, not a copy of it (the copy left this
                    // round's ids in place, so every later sync waited forever).
                    guard.clear();
                    return Ok(());
                }
            }
            // Wait for the next sync to come in
            if tokio::time::timeout(LIVENESS_PERIOD, notified)
                .await
                .is_err()
            {
                self.check_waited_for_nodes(node_state).await?;
            }
        }
    }

    /// qzhou patch: `PeerLost` for the first node that has not synced yet and whose address
    /// refuses a TCP connection (its process is gone). Other failures (a timeout, an unreachable
    /// host) prove nothing and are left to the caller's own timeout.
    async fn check_waited_for_nodes(
        &self,
        node_state: &NodeState,
    ) -> Result<(), GlobalCollectiveError> {
        let waited_for = {
            let synced = self.syncing_peers.lock().unwrap();
            node_state
                .nodes
                .iter()
                .filter(|(id, _)| !synced.contains(id))
                .map(|(id, address)| (*id, address.to_string()))
                .collect::<Vec<_>>()
        };
        for (id, address) in waited_for {
            let host_port = address.split("://").last().unwrap_or_default();
            let host_port = host_port.split('/').next().unwrap_or_default();
            let probe =
                tokio::time::timeout(LIVENESS_PERIOD, tokio::net::TcpStream::connect(host_port))
                    .await;
            if let Ok(Err(err)) = probe
                && err.kind() == std::io::ErrorKind::ConnectionRefused
            {
                log::warn!("node {id:?} at {address} refuses connections: it has stopped");
                return Err(GlobalCollectiveError::PeerLost(id));
            }
        }
        Ok(())
    }

    pub async fn handle_sync_connection<C: CommunicationChannel>(&self, mut channel: C) {
        let msg = channel.recv().await.unwrap();
        let Some(msg) = msg else {
            return;
        };

        let msg = rmp_serde::from_slice::<SyncRequest>(&msg.data).unwrap();

        self.add_syncing_peer(msg.0);

        self.sync_notif.notify_waiters();
    }
}
