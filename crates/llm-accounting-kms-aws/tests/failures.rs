//! The AWS provider against the failures moto cannot produce, on loopback (no moto needed):
//! a refused connection, throttling, server errors, a KMS that hangs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use llm_accounting_core::layers::{LayerOptions, RetryPolicy};
use llm_accounting_core::{Error, KmsProvider};
use llm_accounting_kms_aws::AwsKmsProvider;
use llm_accounting_kms_aws::test_support;
use llm_accounting_testkit::{
    assert_unavailable, closed_port_url, ctx, error_chain, layered, quick_layers,
};

mod common;

use common::CALL_TIMEOUT;

#[tokio::test]
async fn a_refused_connection_is_retried_then_unavailable() {
    let url = closed_port_url();
    let client = test_support::client(&url);
    let (provider, metrics) = layered(
        Arc::new(AwsKmsProvider::from_client(&client, "alias/any").expect("provider")),
        &quick_layers(CALL_TIMEOUT),
    );
    let err = provider
        .generate_data_key(&ctx("openai", None, 1))
        .await
        .expect_err("nothing listens");
    // Unavailable; after the retries are spent, no longer retryable (a caller's own retry
    // would multiply the attempts).
    assert_unavailable(&err, false);
    let text = error_chain(&err);
    assert!(text.contains("gave up after 3 attempts"), "{text}");
    let m = metrics.snapshot();
    assert_eq!((m.generates, m.failures, m.retries), (3, 3, 2), "{m:?}");
}

/// A fake KMS on loopback answering each request with the next canned (status, body), one
/// connection per request; after the script, it answers 500.
fn fake_kms(script: Vec<(u16, String)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (status, body) = script
                .next()
                .unwrap_or((500, r#"{"__type":"KMSInternalException"}"#.into()));
            if answer(stream, status, &body).is_err() {
                continue;
            }
        }
    });
    url
}

fn answer(mut stream: TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut request_body = vec![0u8; length];
    reader.read_exact(&mut request_body)?;
    let content_type = if body.starts_with('{') {
        "application/x-amz-json-1.1"
    } else {
        "text/html"
    };
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    use base64::Engine;
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000001";
    let success = format!(
        r#"{{"CiphertextBlob":"{}","KeyId":"{arn}","Plaintext":"{}"}}"#,
        encode(&[7u8; 64]),
        encode(&[9u8; 32])
    );
    let url = fake_kms(vec![
        (
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into(),
        ),
        (500, r#"{"__type":"KMSInternalException"}"#.into()),
        (503, "<html>Service Unavailable</html>".into()),
        (200, success),
    ]);
    let client = test_support::client(&url);
    let (provider, metrics) = layered(
        Arc::new(AwsKmsProvider::from_client(&client, "alias/any").expect("provider")),
        &LayerOptions {
            retry: RetryPolicy {
                max_attempts: 4,
                ..quick_layers(CALL_TIMEOUT).retry
            },
            ..quick_layers(CALL_TIMEOUT)
        },
    );
    let (dek, wrapped) = provider
        .generate_data_key(&ctx("openai", None, 1))
        .await
        .expect("fourth attempt succeeds");
    assert_eq!(dek.expose_secret(), &[9u8; 32]);
    assert_eq!(wrapped.master_key_ref, arn);
    let m = metrics.snapshot();
    assert_eq!(
        (m.generates, m.retryable_failures, m.retries),
        (4, 3, 3),
        "{m:?}"
    );

    // Each one alone, without retries: retryable unavailable, never "no key".
    for (status, body, expect) in [
        (
            400,
            r#"{"__type":"ThrottlingException"}"#,
            "ThrottlingException",
        ),
        (
            500,
            r#"{"__type":"KMSInternalException"}"#,
            "KMSInternalException",
        ),
        (503, "<html>Service Unavailable</html>", "503"),
    ] {
        let url = fake_kms(vec![(status, body.into())]);
        let p = AwsKmsProvider::from_client(&test_support::client(&url), "alias/any")
            .expect("provider");
        let err = p
            .generate_data_key(&ctx("openai", None, 1))
            .await
            .expect_err("fails");
        assert!(
            matches!(
                err,
                Error::ProviderUnavailable {
                    retryable: true,
                    ..
                }
            ),
            "{status}: {err:?}"
        );
        assert!(
            error_chain(&err).contains(expect),
            "{status}: {}",
            error_chain(&err)
        );
    }

    // A 400 that is not transient is not retried.
    let url = fake_kms(vec![(
        400,
        r#"{"__type":"AccessDeniedException","message":"User is not authorized"}"#.into(),
    )]);
    let (p, metrics) = layered(
        Arc::new(AwsKmsProvider::from_client(&test_support::client(&url), "alias/any").expect("p")),
        &quick_layers(CALL_TIMEOUT),
    );
    let err = p
        .unwrap_key(
            &llm_accounting_core::WrappedKey {
                provider: "aws".into(),
                master_key_ref: arn.into(),
                ciphertext: vec![1; 64],
            },
            &ctx("openai", None, 1),
        )
        .await
        .expect_err("denied");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(
        error_chain(&err).contains("not authorized"),
        "{}",
        error_chain(&err)
    );
    assert_eq!(metrics.snapshot().retries, 0);
}

#[tokio::test]
async fn a_hung_kms_times_out_and_is_retried() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let (provider, metrics) = layered(
        Arc::new(AwsKmsProvider::from_client(&test_support::client(&url), "alias/any").expect("p")),
        &LayerOptions {
            retry: RetryPolicy {
                max_attempts: 2,
                ..quick_layers(CALL_TIMEOUT).retry
            },
            timeout: Some(Duration::from_millis(300)),
        },
    );
    let err = provider
        .generate_data_key(&ctx("openai", None, 1))
        .await
        .expect_err("hangs");
    // Each timed-out attempt was retryable (it was retried); the final error, with the
    // retries spent, is not.
    assert_unavailable(&err, false);
    let text = error_chain(&err);
    assert!(text.contains("no answer within 300 ms"), "{text}");
    assert!(text.contains("gave up after 2 attempts"), "{text}");
    let m = metrics.snapshot();
    assert_eq!((m.generates, m.retries), (2, 1), "{m:?}");
}
