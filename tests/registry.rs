//! The Schema Registry client against the in-process registry, over real HTTP on loopback.

use partner_sync::codec::Codec;
use partner_sync::model::{CommandKind, SourceKind};
use partner_sync::registry::fake::FakeRegistry;
use partner_sync::registry::{RegistryClient, RegistryError};
use partner_sync::settings::{Secret, Settings};

async fn client(url: String) -> RegistryClient {
    client_with(vec![url], "", "", "")
}

#[tokio::test]
async fn writer_schemas_are_fetched_by_id_and_cached() {
    let running = FakeRegistry::start(0).await.unwrap();
    let codec = Codec::new();
    let schema = codec.event_schema(SourceKind::Lead);
    let text = partner_sync::codec::EVENT_SCHEMAS[1].1;
    let id = running
        .registry
        .register("sales.lead.changes-value", text)
        .unwrap();
    let mut c = client(running.url()).await;
    let fetched = c.fetch(id).await.unwrap();
    assert_eq!(
        *fetched, *schema,
        "the registry keeps defaults, logical types and docs"
    );
    assert!(codec.reads_directly(SourceKind::Lead, &fetched));
    let before = running.registry.request_count();
    c.fetch(id).await.unwrap();
    assert_eq!(
        running.registry.request_count(),
        before,
        "a cached id needs no request"
    );
    assert_eq!(
        c.fetch(999).await.unwrap_err(),
        RegistryError::UnknownId(999)
    );
}

#[tokio::test]
async fn an_outage_is_retriable_and_not_cached() {
    let running = FakeRegistry::start(0).await.unwrap();
    let id = running
        .registry
        .register(
            "sales.contact.changes-value",
            partner_sync::codec::EVENT_SCHEMAS[3].1,
        )
        .unwrap();
    let mut c = client(running.url()).await;
    running.registry.set_unavailable(true);
    let err = c.fetch(id).await.unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    running.registry.set_unavailable(false);
    assert!(c.fetch(id).await.is_ok(), "the failure must not be cached");
}

#[tokio::test]
async fn an_unreachable_registry_is_retriable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut c = client(url).await;
    assert!(c.fetch(1).await.unwrap_err().is_retriable());
}

#[tokio::test]
async fn output_schemas_are_checked_at_start_up_or_registered_when_asked() {
    let running = FakeRegistry::start(0).await.unwrap();
    let c = client(running.url()).await;
    let schema = partner_sync::codec::COMMAND_SCHEMAS[2].1;
    assert_eq!(
        partner_sync::codec::COMMAND_SCHEMAS[2].0,
        CommandKind::CustomerUpsert
    );
    let subject = "commerce.customer.commands-value";
    let err = c.ensure(subject, schema, false).await.unwrap_err();
    assert!(
        err.to_string().contains(subject) && err.to_string().contains("auto_register"),
        "{err}"
    );
    let id = c.ensure(subject, schema, true).await.unwrap();
    assert_eq!(
        c.ensure(subject, schema, false).await.unwrap(),
        id,
        "lookup finds the registered schema"
    );
    assert_eq!(
        c.ensure(subject, schema, true).await.unwrap(),
        id,
        "registering again is idempotent"
    );
}

#[tokio::test]
async fn the_registry_refuses_an_incompatible_schema_with_409() {
    let running = FakeRegistry::start(0).await.unwrap();
    let v1 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
    let v2 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"string"}]}"#;
    let http = reqwest::Client::new();
    let post = |path: &str, schema: &str| {
        http.post(format!("{}{path}", running.url()))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(serde_json::json!({ "schema": schema }).to_string())
            .send()
    };
    assert_eq!(
        post("/subjects/t-value/versions", v1)
            .await
            .unwrap()
            .status(),
        200
    );
    let refused = post("/subjects/t-value/versions", v2).await.unwrap();
    assert_eq!(refused.status(), 409);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error_code"], 409);
    let check: serde_json::Value = post("/compatibility/subjects/t-value/versions/latest", v2)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(check["is_compatible"], false);
    let missing = http
        .get(format!("{}/schemas/ids/42", running.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<serde_json::Value>().await.unwrap()["error_code"],
        40403
    );
}

/// A client for `urls` with the given credentials.
fn client_with(
    urls: Vec<String>,
    username: &str,
    password: &str,
    bearer_token: &str,
) -> RegistryClient {
    let mut cfg = Settings::defaults().registry;
    cfg.urls = urls;
    cfg.timeout_ms = 2_000;
    cfg.username = username.to_string();
    cfg.password = Secret::new(password);
    cfg.bearer_token = Secret::new(bearer_token);
    RegistryClient::new(&cfg).unwrap()
}

#[tokio::test]
async fn basic_and_bearer_authentication_reach_a_registry_that_requires_them() {
    let running = FakeRegistry::start(0).await.unwrap();
    let id = running
        .registry
        .register(
            "sales.lead.changes-value",
            partner_sync::codec::EVENT_SCHEMAS[1].1,
        )
        .unwrap();
    // alice:s3cret in base64.
    running
        .registry
        .require_authorization(Some("Basic YWxpY2U6czNjcmV0"));
    let mut basic = client_with(vec![running.url()], "alice", "s3cret", "");
    basic
        .fetch(id)
        .await
        .expect("basic authentication accepted");
    let mut wrong = client_with(vec![running.url()], "alice", "guess", "");
    assert!(
        wrong.fetch(id).await.is_err(),
        "a wrong password is refused"
    );
    let mut anonymous = client_with(vec![running.url()], "", "", "");
    assert!(
        anonymous.fetch(id).await.is_err(),
        "no credential is refused"
    );

    running.registry.require_authorization(Some("Bearer t0ken"));
    let mut bearer = client_with(vec![running.url()], "", "", "t0ken");
    bearer
        .fetch(id)
        .await
        .expect("bearer authentication accepted");
    let mut basic_again = client_with(vec![running.url()], "alice", "s3cret", "");
    assert!(
        basic_again.fetch(id).await.is_err(),
        "basic is not the bearer token"
    );
}

#[tokio::test]
async fn with_several_urls_a_dead_first_registry_is_passed_over() {
    let running = FakeRegistry::start(0).await.unwrap();
    let id = running
        .registry
        .register(
            "sales.lead.changes-value",
            partner_sync::codec::EVENT_SCHEMAS[1].1,
        )
        .unwrap();
    // A port nothing listens on: bound, then released.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut c = client_with(vec![dead.clone(), running.url()], "", "", "");
    c.fetch(id).await.expect("the second URL answers");
    let mut only_dead = client_with(vec![dead], "", "", "");
    assert!(only_dead.fetch(id).await.unwrap_err().is_retriable());
}

#[tokio::test]
async fn each_subject_name_strategy_registers_the_output_schemas_under_its_subjects() {
    use partner_sync::settings::SubjectNameStrategy;
    let topic = "commerce.customer.commands";
    let record = "partnersync.commerce.commands.CustomerUpsert";
    for (strategy, subject) in [
        (SubjectNameStrategy::Topic, format!("{topic}-value")),
        (SubjectNameStrategy::Record, record.to_string()),
        (
            SubjectNameStrategy::TopicRecord,
            format!("{topic}-{record}"),
        ),
    ] {
        assert_eq!(strategy.subject(topic, record), subject);
        let running = FakeRegistry::start(0).await.unwrap();
        let c = client(running.url()).await;
        let text = partner_sync::codec::COMMAND_SCHEMAS
            .iter()
            .find(|(k, _)| *k == CommandKind::CustomerUpsert)
            .unwrap()
            .1;
        let id = c.ensure(&subject, text, true).await.unwrap();
        assert_eq!(running.registry.subjects(), vec![subject.clone()]);
        assert_eq!(
            c.ensure(&subject, text, false).await.unwrap(),
            id,
            "{subject}"
        );
    }
}
