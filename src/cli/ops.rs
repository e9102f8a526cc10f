//! Operator commands: each is one typed-client call against any replica, printed for a
//! person (or as the raw JSON answer with `--json`).

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::survey::{or_dash, survey};
use crate::api::types::{ClusterStatus, NodeRegisterRequest};
use crate::client::Client;
use crate::domain::{NodeId, TenantShardId};

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of any replica.
    #[arg(
        long,
        env = "PAGESERVER_CONTROLLER_URL",
        default_value = "http://127.0.0.1:7001"
    )]
    pub url: String,

    /// Print the server's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,

    /// File holding the bearer token to send (JWT). Never printed or logged. Without it,
    /// the token comes from the environment variable PAGESERVER_CONTROLLER_TOKEN, if set.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,

    /// CA certificate (PEM) to trust for an https:// --url.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl ClientArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let token = crate::auth::client_token(self.token_file.as_deref())?;
        let http = crate::server::peer_client(self.tls_ca.as_deref())?;
        Ok(Client::with_http(&self.url, http).with_token(token))
    }
}

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Attach a tenant shard to a node: it gets a new, higher generation.
    Attach {
        #[command(flatten)]
        client: ClientArgs,
        /// Tenant shard id: 32 hex digits, optionally -NNCC.
        tenant: TenantShardId,
        /// Pageserver node id.
        #[arg(long)]
        node: u64,
        /// For a shard the controller has never seen: start from this generation.
        #[arg(long)]
        generation_override: Option<u32>,
    },
    /// Detach a tenant shard from its node; its generation is kept.
    Detach {
        #[command(flatten)]
        client: ClientArgs,
        /// Tenant shard id: 32 hex digits, optionally -NNCC.
        tenant: TenantShardId,
    },
    /// Show a tenant shard's generation and node.
    Inspect {
        #[command(flatten)]
        client: ClientArgs,
        /// Tenant shard id: 32 hex digits, optionally -NNCC.
        tenant: TenantShardId,
    },
    /// Re-attach a node, as a restarting pageserver does: every shard on it gets a new
    /// generation.
    ReAttach {
        #[command(flatten)]
        client: ClientArgs,
        /// Pageserver node id that restarted.
        #[arg(long)]
        node: u64,
    },
    /// Check generations, as a pageserver does before deleting objects.
    Validate {
        #[command(flatten)]
        client: ClientArgs,
        /// Entries as TENANT_SHARD_ID:GENERATION.
        #[arg(required = true, value_name = "TENANT_SHARD_ID:GEN")]
        entries: Vec<String>,
    },
    /// Move a tenant shard to a registered node with a new generation.
    Migrate {
        #[command(flatten)]
        client: ClientArgs,
        /// Tenant shard id: 32 hex digits, optionally -NNCC.
        tenant: TenantShardId,
        /// Registered pageserver node id to move it to.
        #[arg(long)]
        node: u64,
    },
    /// Register a pageserver node.
    RegisterNode {
        #[command(flatten)]
        client: ClientArgs,
        /// Pageserver node id.
        #[arg(long)]
        node: u64,
        /// Host the node serves the page service (libpq) on (the port is --pg-port).
        #[arg(long, value_parser = host_only)]
        pg_addr: String,
        /// Port of the page service.
        #[arg(long, default_value_t = 6400)]
        pg_port: u16,
        /// Host the node serves its management HTTP API on (the port is --http-port).
        #[arg(long, value_parser = host_only)]
        http_addr: String,
        /// Port of the management HTTP API.
        #[arg(long, default_value_t = 9898)]
        http_port: u16,
        /// The node's availability zone, if any.
        #[arg(long)]
        availability_zone: Option<String>,
    },
    /// List registered pageserver nodes.
    Nodes {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tenant shards with their generation and node, in id order.
    Tenants {
        #[command(flatten)]
        client: ClientArgs,
        /// Start after this tenant shard id.
        #[arg(long)]
        after: Option<TenantShardId>,
        /// At most this many shards (the server allows up to 100,000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Cluster membership and health.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, members and log indexes as the asked replica sees them.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// Also ask every member for its own view (state, term, leader, applied index)
        /// and show it beside the leader's replication progress. Members are reached at
        /// their peer URLs.
        #[arg(long)]
        all: bool,
    },
    /// Add a replica (started with an empty data dir) to the cluster: it catches up as a
    /// learner, then becomes a voter.
    Add {
        #[command(flatten)]
        client: ClientArgs,
        /// The new replica's id.
        #[arg(long)]
        id: u64,
        /// The URL its peers reach it at.
        #[arg(long)]
        member_url: String,
        /// Keep it a learner (replicates, does not vote).
        #[arg(long)]
        learner: bool,
        /// How long the leader waits for it to catch up before giving up (it stays a
        /// learner then); the server's default is 60 s.
        #[arg(long, value_name = "SECONDS")]
        catch_up_timeout_s: Option<u64>,
    },
    /// Remove a replica from the cluster (a leader hands leadership over first).
    Remove {
        #[command(flatten)]
        client: ClientArgs,
        /// The replica's id.
        #[arg(long)]
        id: u64,
        /// Remove even if the remaining voters that answer could not form a quorum.
        #[arg(long)]
        force: bool,
    },
    /// Hand leadership to another voter.
    Transfer {
        #[command(flatten)]
        client: ClientArgs,
        /// The voter to become leader.
        #[arg(long)]
        to: u64,
    },
    /// Ask the replica at --url (itself, not the leader) to hand leadership away if it
    /// leads: before maintenance, or as a pod's preStop hook (with the peer token).
    StepDown {
        #[command(flatten)]
        client: ClientArgs,
        /// Then wait this long before exiting, also when the step-down failed: in a
        /// preStop hook, the time the pod needs to leave the client Service before SIGTERM.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        then_wait_s: u64,
    },
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn parse_entry(entry: &str) -> anyhow::Result<(TenantShardId, u32)> {
    let (id, generation) = entry
        .rsplit_once(':')
        .with_context(|| format!("{entry:?} is not TENANT_SHARD_ID:GEN"))?;
    Ok((
        id.parse().with_context(|| format!("in {entry:?}"))?,
        generation
            .parse()
            .with_context(|| format!("generation in {entry:?} is not a u32"))?,
    ))
}

pub fn print_cluster_status(status: &ClusterStatus) {
    println!(
        "cluster {}  (answered by replica {}, {} in term {})",
        status.cluster_id, status.replica_id, status.state, status.term
    );
    println!("leader: {}", or_dash(status.leader));
    if let Some(removed) = &status.removed {
        println!("{}", removed.explain(status.replica_id));
    }
    if status.joint {
        println!(
            "membership change in progress (joint consensus: old and new voters must both agree)"
        );
    }
    println!("{:<4} {:<8} {:<10} {:<32}", "ID", "ROLE", "MATCHED", "URL");
    for member in &status.members {
        let mark = if Some(member.id) == status.leader {
            "*"
        } else {
            ""
        };
        println!(
            "{:<4} {:<8} {:<10} {}",
            format!("{}{mark}", member.id),
            member.role,
            or_dash(member.matched_index),
            member.url
        );
    }
    if status
        .leader
        .is_some_and(|leader| leader != status.replica_id)
    {
        println!(
            "MATCHED is known to the leader only: ask it with --url, or see every member with \
             --all"
        );
    }
    println!(
        "log: last {} (term {}), committed {}, applied {}, snapshot {}, purged {}",
        or_dash(status.last_log_index),
        or_dash(status.last_log_term),
        or_dash(status.committed_index),
        or_dash(status.applied_index),
        or_dash(status.snapshot_index),
        or_dash(status.purged_index)
    );
}

/// A host name or address without a port: a node's ports are flags of their own, and a
/// `host:port` here would be registered as a host (and a correction refused as a
/// conflicting address).
fn host_only(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("empty host".into());
    }
    let has_port = value.parse::<std::net::SocketAddr>().is_ok()
        || value
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.contains(':') && port.parse::<u16>().is_ok());
    if has_port {
        Err(format!(
            "{value:?} carries a port: give the host alone, and the port with --pg-port or --http-port"
        ))
    } else {
        Ok(value.to_owned())
    }
}

pub async fn run(command: OpsCommand) -> anyhow::Result<()> {
    match command {
        OpsCommand::Attach {
            client,
            tenant,
            node,
            generation_override,
        } => {
            let generation = client
                .client()?
                .attach_hook(tenant, Some(NodeId(node)), generation_override)
                .await?;
            if client.json {
                return print_json(&serde_json::json!({ "gen": generation }));
            }
            println!(
                "{tenant} attached to node {node} with generation {}",
                or_dash(generation)
            );
        }
        OpsCommand::Detach { client, tenant } => {
            client.client()?.attach_hook(tenant, None, None).await?;
            if client.json {
                return print_json(&serde_json::json!({ "gen": null }));
            }
            println!("{tenant} detached");
        }
        OpsCommand::Inspect { client, tenant } => {
            let attachment = client.client()?.inspect(tenant).await?;
            if client.json {
                return print_json(&serde_json::json!({ "attachment": attachment }));
            }
            match attachment {
                Some((generation, node)) => {
                    println!("{tenant}: generation {generation} on node {node}")
                }
                None => println!("{tenant}: not attached"),
            }
        }
        OpsCommand::ReAttach { client, node } => {
            let response = client.client()?.re_attach(NodeId(node), None).await?;
            if client.json {
                return print_json(&response);
            }
            println!(
                "node {node} re-attached {} tenant shards",
                response.tenants.len()
            );
            for tenant in response.tenants {
                println!("  {} generation {}", tenant.id, or_dash(tenant.r#gen));
            }
        }
        OpsCommand::Validate { client, entries } => {
            let entries = entries
                .iter()
                .map(|e| parse_entry(e))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let response = client.client()?.validate(&entries).await?;
            if client.json {
                return print_json(&response);
            }
            // Answers come in request order, with unknown shards left out.
            let mut answers = response.tenants.iter().peekable();
            for (id, generation) in &entries {
                let verdict = match answers.next_if(|t| t.id == *id) {
                    Some(t) if t.valid => "valid",
                    Some(_) => "NOT valid",
                    None => "unknown (not valid)",
                };
                println!("{id} generation {generation}: {verdict}");
            }
        }
        OpsCommand::Migrate {
            client,
            tenant,
            node,
        } => {
            let generation = client.client()?.migrate(tenant, NodeId(node)).await?;
            if client.json {
                return print_json(&serde_json::json!({ "gen": generation }));
            }
            println!("{tenant} is on node {node} with generation {generation}");
        }
        OpsCommand::RegisterNode {
            client,
            node,
            pg_addr,
            pg_port,
            http_addr,
            http_port,
            availability_zone,
        } => {
            let request = NodeRegisterRequest {
                node_id: NodeId(node),
                listen_pg_addr: pg_addr,
                listen_pg_port: pg_port,
                listen_http_addr: http_addr,
                listen_http_port: http_port,
                availability_zone_id: availability_zone,
            };
            client.client()?.register_node(&request).await?;
            println!("node {node} registered");
        }
        OpsCommand::Nodes { client } => {
            let nodes = client.client()?.list_nodes().await?;
            if client.json {
                return print_json(&nodes);
            }
            println!(
                "{:<6} {:<28} {:<28} {:<16} {:>8}",
                "NODE", "PG", "HTTP", "SCHEDULING", "SHARDS"
            );
            for node in nodes {
                println!(
                    "{:<6} {:<28} {:<28} {:<16} {:>8}",
                    node.id,
                    format!("{}:{}", node.listen_pg_addr, node.listen_pg_port),
                    format!("{}:{}", node.listen_http_addr, node.listen_http_port),
                    format!("{:?}", node.scheduling),
                    node.attached_shards
                );
            }
        }
        OpsCommand::Tenants {
            client,
            after,
            limit,
        } => {
            let page = client.client()?.list_tenants(after, Some(limit)).await?;
            if client.json {
                return print_json(&page);
            }
            println!("{:<40} {:>10} {:>6}", "TENANT SHARD", "GENERATION", "NODE");
            for shard in &page {
                println!(
                    "{:<40} {:>10} {:>6}",
                    shard.tenant_shard_id.to_string(),
                    or_dash(shard.generation),
                    or_dash(shard.node_id)
                );
            }
            if page.len() == limit {
                if let Some(last) = page.last() {
                    println!("(more: --after {})", last.tenant_shard_id);
                }
            }
        }
        OpsCommand::Cluster(command) => {
            let (client, status) = match command {
                ClusterCommand::Status { client, all } => {
                    let api = client.client()?;
                    let status = api.cluster_status().await?;
                    if all {
                        let survey = survey(&api, status).await;
                        if client.json {
                            return print_json(&survey);
                        }
                        print!("{}", survey.render());
                        return Ok(());
                    }
                    (client, status)
                }
                ClusterCommand::Add {
                    client,
                    id,
                    member_url,
                    learner,
                    catch_up_timeout_s,
                } => {
                    let catch_up = catch_up_timeout_s.map(std::time::Duration::from_secs);
                    let status = client
                        .client()?
                        .add_member(id, &member_url, learner, catch_up)
                        .await?;
                    (client, status)
                }
                ClusterCommand::Remove { client, id, force } => {
                    let status = client.client()?.remove_member(id, force).await?;
                    (client, status)
                }
                ClusterCommand::Transfer { client, to } => {
                    let status = client.client()?.transfer_leader(to).await?;
                    (client, status)
                }
                ClusterCommand::StepDown {
                    client,
                    then_wait_s,
                } => {
                    let result = step_down(&client).await;
                    if then_wait_s > 0 {
                        tokio::time::sleep(std::time::Duration::from_secs(then_wait_s)).await;
                    }
                    return result;
                }
            };
            if client.json {
                return print_json(&status);
            }
            print_cluster_status(&status);
        }
    }
    Ok(())
}

async fn step_down(client: &ClientArgs) -> anyhow::Result<()> {
    let answer = client
        .client()?
        .step_down()
        .await
        .with_context(|| format!("asking {} to step down", client.url))?;
    if client.json {
        return print_json(&answer);
    }
    let id = answer.replica_id;
    match (answer.was_leader, answer.leader) {
        (true, Some(leader)) if leader == id => {
            println!("replica {id} leads and has no other voter to hand leadership to")
        }
        (true, leader) => println!(
            "replica {id} stepped down; the leader is now {}",
            or_dash(leader)
        ),
        (false, leader) => println!(
            "replica {id} does not lead (leader: {}); nothing to do",
            or_dash(leader)
        ),
    }
    Ok(())
}
