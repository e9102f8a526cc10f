//! Postgres as a generation store, as in Neon's own controller: one row per tenant shard
//! and `UPDATE ... SET generation = generation + 1 ... RETURNING generation` per attach.
//! Each closed-loop worker owns one connection, as a connection pool would give it.

use anyhow::Context;
use tokio_postgres::{Client, NoTls, Statement};

pub const UPDATE: &str = "UPDATE generations SET generation = generation + 1, node_id = $2 \
                          WHERE tenant_shard_id = $1 RETURNING generation";

/// Opens a connection; its driver task runs until the client is dropped.
pub async fn connect(conninfo: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .with_context(|| format!("connecting to Postgres ({conninfo})"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection ended: {e}");
        }
    });
    Ok(client)
}

/// Creates the table afresh with `tenants` rows at generation 0.
pub async fn prepare_table(client: &Client, tenants: &[String]) -> anyhow::Result<()> {
    client
        .batch_execute(
            "DROP TABLE IF EXISTS generations;
             CREATE TABLE generations (
                 tenant_shard_id text PRIMARY KEY,
                 generation integer NOT NULL,
                 node_id bigint
             );",
        )
        .await
        .context("creating the generations table")?;
    client
        .execute(
            "INSERT INTO generations (tenant_shard_id, generation) \
             SELECT unnest($1::text[]), 0",
            &[&tenants],
        )
        .await
        .context("inserting the tenants")?;
    Ok(())
}

/// A worker's connection with the update prepared.
pub struct Worker {
    pub client: Client,
    pub update: Statement,
}

impl Worker {
    pub async fn new(conninfo: &str) -> anyhow::Result<Worker> {
        let client = connect(conninfo).await?;
        let update = client.prepare(UPDATE).await?;
        Ok(Worker { client, update })
    }

    pub async fn increment(&self, tenant: &str, node: i64) -> anyhow::Result<i32> {
        let row = self
            .client
            .query_one(&self.update, &[&tenant, &node])
            .await?;
        Ok(row.get(0))
    }
}
