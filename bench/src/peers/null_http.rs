//! A do-nothing HTTP server: it answers every attach-hook with `{"gen":1}` without
//! looking at the body. Driven through our own client like the real service, it measures
//! what HTTP and JSON alone cost on this machine: the ceiling of any API that carries one
//! tenant per request. It runs as a separate process (`bench null-server`) so it does not
//! share a runtime with the load generator.

use std::net::SocketAddr;

use axum::routing::post;
use axum::Router;

pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new().route(
        "/debug/v1/attach-hook",
        post(|_body: axum::body::Bytes| async {
            ([("content-type", "application/json")], "{\"gen\":1}")
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
