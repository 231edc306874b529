//! The model stack the CLI runs on, built from an `Endpoint` in a few lines: a client
//! per key rotated through a key pool, a throttle that paces and backs off on 429s,
//! and the retry middleware. Here against the bundled mock server, so it runs offline:
//!
//! ```sh
//! cargo run --example production_stack
//! ```

use afterimage::prelude::*;
use afterimage_mock::{MockConfig, MockServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = MockServer::start(MockConfig::default()).await?;

    // Two keys rotate; each request may be retried three times.
    let endpoint = Endpoint::new(Provider::Openai, "gpt-4o-mini")
        .base_url(server.openai_base_url())
        .api_key("sk-first")
        .api_key("sk-second")
        .max_retries(3);

    // Stacks built from the same parts share one connection pool and one gauge of
    // requests waiting out a retry delay (give it to `GenerateOptions::parked_requests`).
    let shared = SharedParts::new(endpoint.http_client(16)?);
    let stack = endpoint.build_with(&shared)?;

    let reply = stack
        .model()
        .chat(ChatRequest::new(vec![Message::user(
            "Why is the sky blue?",
        )]))
        .await?;
    println!("{}", reply.message.content);

    // The counters a run report shows.
    for key in stack.key_stats() {
        println!("key {}: {} requests", key.key, key.requests);
    }
    println!(
        "concurrency limit {}, {} requests parked",
        stack.throttle_stats().concurrency_limit,
        stack.parked().now()
    );
    server.shutdown().await;
    Ok(())
}
