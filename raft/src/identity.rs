//! Who a replica is, checked on every replica-to-replica request.
//!
//! Each RPC names the sending replica, the replica it is meant for, and the cluster. The
//! receiver refuses a request for another replica id (a stale or mistyped URL), from
//! another cluster, or whose sender header disagrees with the vote inside the message;
//! the sender refuses an answer from a replica other than the one it addressed. A
//! misconfiguration thus fails loudly instead of letting one replica vote as another.

use axum::http::HeaderMap;

use crate::ReplicaId;

pub const HEADER_CLUSTER: &str = "x-controller-cluster";
pub const HEADER_FROM: &str = "x-controller-from";
pub const HEADER_TO: &str = "x-controller-to";
pub const HEADER_RESPONDER: &str = "x-controller-responder";

/// This replica's id and its cluster's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub cluster_id: String,
    pub replica_id: ReplicaId,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdentityError {
    #[error("request is for cluster {got:?} but this replica belongs to cluster {ours:?}")]
    WrongCluster { ours: String, got: String },
    #[error("request is for replica {got} but this is replica {ours}; check the member URL")]
    WrongReplica { ours: ReplicaId, got: ReplicaId },
    #[error("request says it comes from replica {header} but its vote names replica {vote}")]
    SenderMismatch { header: ReplicaId, vote: ReplicaId },
    #[error("addressed replica {addressed} but replica {answered} answered; check the member URL")]
    WrongResponder {
        addressed: ReplicaId,
        answered: ReplicaId,
    },
    #[error("missing or malformed header {0}")]
    MissingHeader(&'static str),
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, PeerIdentityError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(PeerIdentityError::MissingHeader(name))
}

fn header_id(headers: &HeaderMap, name: &'static str) -> Result<ReplicaId, PeerIdentityError> {
    header(headers, name)?
        .parse()
        .map_err(|_| PeerIdentityError::MissingHeader(name))
}

impl PeerIdentity {
    /// Headers a request from this replica to `target` carries.
    pub fn request_headers(&self, target: ReplicaId) -> [(&'static str, String); 3] {
        [
            (HEADER_CLUSTER, self.cluster_id.clone()),
            (HEADER_FROM, self.replica_id.to_string()),
            (HEADER_TO, target.to_string()),
        ]
    }

    /// Checks an incoming request's addressing; returns the sender's id.
    pub fn check_incoming(&self, headers: &HeaderMap) -> Result<ReplicaId, PeerIdentityError> {
        let cluster = header(headers, HEADER_CLUSTER)?;
        if cluster != self.cluster_id {
            return Err(PeerIdentityError::WrongCluster {
                ours: self.cluster_id.clone(),
                got: cluster.to_owned(),
            });
        }
        let to = header_id(headers, HEADER_TO)?;
        if to != self.replica_id {
            return Err(PeerIdentityError::WrongReplica {
                ours: self.replica_id,
                got: to,
            });
        }
        header_id(headers, HEADER_FROM)
    }

    /// Checks that the answer came from the replica we addressed.
    pub fn check_responder(
        headers: &HeaderMap,
        target: ReplicaId,
    ) -> Result<(), PeerIdentityError> {
        let responder = header_id(headers, HEADER_RESPONDER)?;
        if responder != target {
            return Err(PeerIdentityError::WrongResponder {
                addressed: target,
                answered: responder,
            });
        }
        Ok(())
    }
}
