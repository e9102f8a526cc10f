//! etcd as a generation store: a generation is a key whose value is a decimal counter; an
//! increment reads the key, then commits a transaction "if the key's mod revision is
//! still what I read, put value + 1", retrying on a lost race.
//!
//! Two clients, both written here:
//! - native gRPC through tonic. The `etcd-client` crate needs `protoc` at build time,
//!   which this workspace must not require, so the few KV messages used are declared by
//!   hand with prost's derive (field numbers from etcd's public `rpc.proto`, API v3);
//! - the HTTP/JSON gateway (`/v3/kv/range`, `/v3/kv/txn`) through reqwest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tonic::codec::ProstCodec;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `Compare` with result EQUAL (0) and target MOD (2): the key's mod revision equals
/// `mod_revision` (the `target_union` oneof, set to its `mod_revision` member, tag 6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Compare {
    #[prost(int32, tag = "1")]
    pub result: i32,
    #[prost(int32, tag = "2")]
    pub target: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    #[prost(int64, optional, tag = "6")]
    pub mod_revision: Option<i64>,
}

const COMPARE_EQUAL: i32 = 0;
const TARGET_MOD: i32 = 2;

/// `RequestOp` carrying a put (oneof member `request_put`, tag 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOp {
    #[prost(message, optional, tag = "2")]
    pub request_put: Option<PutRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(uint64, tag = "4")]
    pub leader: u64,
}

/// A native gRPC client of one etcd member.
#[derive(Clone)]
pub struct Grpc {
    channel: Channel,
}

impl Grpc {
    pub async fn connect(endpoint: &str) -> anyhow::Result<Grpc> {
        let channel = Channel::from_shared(format!("http://{endpoint}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to etcd at {endpoint}"))?;
        Ok(Grpc { channel })
    }

    async fn unary<Req, Resp>(&self, path: &'static str, request: Req) -> anyhow::Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.context("etcd channel not ready")?;
        let codec = ProstCodec::<Req, Resp>::default();
        let response = grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map_err(|status| anyhow::anyhow!("etcd: {}: {}", status.code(), status.message()))?;
        Ok(response.into_inner())
    }

    pub async fn status(&self) -> anyhow::Result<StatusResponse> {
        self.unary("/etcdserverpb.Maintenance/Status", StatusRequest {})
            .await
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        let _: PutResponse = self
            .unary(
                "/etcdserverpb.KV/Put",
                PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                },
            )
            .await?;
        Ok(())
    }

    /// Reads the counter at `key` (linearizable) and commits counter + 1 if nobody changed
    /// it meanwhile; retries lost races (counted in `retries`). Returns the new value.
    pub async fn increment(&self, key: &[u8], retries: &AtomicU64) -> anyhow::Result<u64> {
        loop {
            let range: RangeResponse = self
                .unary("/etcdserverpb.KV/Range", RangeRequest { key: key.to_vec() })
                .await?;
            let (current, mod_revision) = match range.kvs.first() {
                Some(kv) => (parse_counter(&kv.value)?, kv.mod_revision),
                None => (0, 0),
            };
            let next = current + 1;
            let txn = TxnRequest {
                compare: vec![Compare {
                    result: COMPARE_EQUAL,
                    target: TARGET_MOD,
                    key: key.to_vec(),
                    mod_revision: Some(mod_revision),
                }],
                success: vec![RequestOp {
                    request_put: Some(PutRequest {
                        key: key.to_vec(),
                        value: next.to_string().into_bytes(),
                    }),
                }],
                failure: vec![],
            };
            let answer: TxnResponse = self.unary("/etcdserverpb.KV/Txn", txn).await?;
            if answer.succeeded {
                return Ok(next);
            }
            retries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn parse_counter(value: &[u8]) -> anyhow::Result<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("counter value {value:?} is not a number"))
}

/// Finds the leader's client endpoint among `endpoints` through the Status RPC.
pub async fn leader_endpoint(endpoints: &[String]) -> anyhow::Result<String> {
    for endpoint in endpoints {
        let Ok(client) = Grpc::connect(endpoint).await else {
            continue;
        };
        let Ok(status) = client.status().await else {
            continue;
        };
        if status.header.as_ref().map(|h| h.member_id) == Some(status.leader) {
            return Ok(endpoint.clone());
        }
    }
    bail!("no etcd member among {endpoints:?} says it is the leader")
}

/// The HTTP/JSON gateway of one etcd member (keys and values are base64, int64s strings).
#[derive(Clone)]
pub struct Gateway {
    http: reqwest::Client,
    base: Arc<str>,
}

impl Gateway {
    pub fn new(http: reqwest::Client, endpoint: &str) -> Gateway {
        Gateway {
            http,
            base: format!("http://{endpoint}").into(),
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let value: serde_json::Value = response.json().await?;
        if !status.is_success() {
            bail!("etcd gateway {path}: {status}: {value}");
        }
        Ok(value)
    }

    pub async fn increment(&self, key: &[u8], retries: &AtomicU64) -> anyhow::Result<u64> {
        let key64 = B64.encode(key);
        loop {
            let range = self
                .post("/v3/kv/range", serde_json::json!({ "key": key64 }))
                .await?;
            let (current, mod_revision) = match range["kvs"].get(0) {
                Some(kv) => {
                    let value = B64
                        .decode(kv["value"].as_str().unwrap_or_default())
                        .context("gateway value is not base64")?;
                    let revision = kv["mod_revision"]
                        .as_str()
                        .and_then(|s| s.parse::<i64>().ok())
                        .context("gateway kv has no mod_revision")?;
                    (parse_counter(&value)?, revision)
                }
                None => (0, 0),
            };
            let next = current + 1;
            let txn = serde_json::json!({
                "compare": [{
                    "result": "EQUAL",
                    "target": "MOD",
                    "key": key64,
                    "mod_revision": mod_revision.to_string(),
                }],
                "success": [{ "request_put": { "key": key64, "value": B64.encode(next.to_string()) } }],
            });
            let answer = self.post("/v3/kv/txn", txn).await?;
            if answer["succeeded"].as_bool() == Some(true) {
                return Ok(next);
            }
            retries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_txn_encodes_with_etcds_field_numbers() {
        let txn = TxnRequest {
            compare: vec![Compare {
                result: COMPARE_EQUAL,
                target: TARGET_MOD,
                key: b"k".to_vec(),
                mod_revision: Some(0),
            }],
            success: vec![RequestOp {
                request_put: Some(PutRequest {
                    key: b"k".to_vec(),
                    value: b"1".to_vec(),
                }),
            }],
            failure: vec![],
        };
        let bytes = txn.encode_to_vec();
        // compare (field 1, length-delimited): target=2 (0x10 0x02), key "k" (0x1a 1 'k'),
        // mod_revision 0 still present because it is a oneof member (0x30 0x00).
        assert_eq!(
            &bytes[..10],
            &[0x0a, 0x07, 0x10, 0x02, 0x1a, 0x01, b'k', 0x30, 0x00, 0x12]
        );
        assert_eq!(parse_counter(b"41").unwrap() + 1, 42);
        assert!(parse_counter(b"x").is_err());
    }
}
