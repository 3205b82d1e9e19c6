//! The headless-Chromium harness against a real page, and the screenshot comparison against
//! synthetic images.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use nanoclaw_test_support::browser::{
    Browser, compare_screenshot, compare_screenshot_to_reference,
};

const INDEX: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title><script src="/app.js" defer></script></head>
<body><button id="go">Go</button></body></html>
"#;

// Served from the same origin rather than inline, as the dashboard's pages are.
const APP_JS: &str = r#"document.getElementById('go').addEventListener('click', () => {
  const p = document.createElement('p');
  p.id = 'done';
  p.textContent = 'clicked';
  document.body.appendChild(p);
});
"#;

async fn serve() -> String {
    let app = Router::new()
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn encode(width: u32, height: u32, rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(rgba).unwrap();
    writer.finish().unwrap();
    out
}

#[tokio::test]
async fn clicks_a_button_and_takes_a_screenshot() {
    let url = serve().await;
    let browser = Browser::launch().await;
    let page = browser.new_page().await;
    page.goto(&url).await.unwrap();
    assert_eq!(page.url().await, url);
    // The script is deferred: it has run once the document is complete.
    page.eval("document.getElementById('go').click()")
        .await
        .unwrap();
    page.wait_for(
        "document.getElementById('done') !== null",
        "the click's paragraph",
    )
    .await;
    assert_eq!(
        page.eval("document.getElementById('done').textContent")
            .await
            .unwrap(),
        "clicked"
    );
    assert!(
        page.eval("no_such_variable")
            .await
            .unwrap_err()
            .contains("no_such_variable")
    );

    let shot = page.screenshot().await;
    assert!(shot.starts_with(b"\x89PNG\r\n\x1a\n"));
    let (width, height, _) = decode(&shot);
    assert_eq!((width, height), (1280, 800));
}

#[tokio::test]
async fn a_failed_navigation_is_an_error() {
    let browser = Browser::launch().await;
    let page = browser.new_page().await;
    // A loopback port just freed: nothing listens there (port 1 would be refused as unsafe).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = page
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    assert!(err.contains("ERR_CONNECTION_REFUSED"), "{err}");
}

/// A 100×100 image with a gradient, so pixels are not all alike.
fn synthetic() -> Vec<u8> {
    let mut rgba = Vec::with_capacity(100 * 100 * 4);
    for y in 0..100u32 {
        for x in 0..100u32 {
            rgba.extend_from_slice(&[(x * 2) as u8 + 20, (y * 2) as u8 + 20, 128, 255]);
        }
    }
    rgba
}

fn write_reference(dir: &Path, name: &str, rgba: &[u8]) {
    std::fs::write(dir.join(format!("{name}.png")), encode(100, 100, rgba)).unwrap();
}

#[test]
fn screenshot_comparison_tolerates_noise_and_catches_changes() {
    let dir = tempfile::tempdir().unwrap();
    let reference = synthetic();

    // Identical: passes (in recording mode too, where it rewrites the same image).
    write_reference(dir.path(), "harness-identical", &reference);
    compare_screenshot(
        "harness-identical",
        &encode(100, 100, &reference),
        dir.path(),
    );

    // Colour noise of at most 40 on every pixel: passes.
    write_reference(dir.path(), "harness-noise", &reference);
    let noisy: Vec<u8> = reference
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if i % 4 == 3 {
                c
            } else if c < 128 {
                c + 40
            } else {
                c - 40
            }
        })
        .collect();
    compare_screenshot_to_reference("harness-noise", &encode(100, 100, &noisy), dir.path());

    // 1 % of the pixels (100 of 10 000) changed by a lot: fails, naming the counts.
    write_reference(dir.path(), "harness-changed", &reference);
    let mut changed = reference.clone();
    for pixel in changed.chunks_exact_mut(4).step_by(100) {
        pixel[0] = 255 - pixel[0];
        pixel[1] = 255 - pixel[1];
    }
    let err = catch_unwind(AssertUnwindSafe(|| {
        compare_screenshot_to_reference("harness-changed", &encode(100, 100, &changed), dir.path())
    }))
    .unwrap_err();
    let message = err.downcast_ref::<String>().unwrap();
    assert!(message.contains("100 of 10000 pixels"), "{message}");
    assert!(message.contains("0.5 %"), "{message}");
    assert!(message.contains("harness-changed.diff.png"), "{message}");

    // A different size fails; so does a missing reference, telling how to record it.
    let err = catch_unwind(|| {
        compare_screenshot_to_reference(
            "harness-identical",
            &encode(50, 200, &reference),
            dir.path(),
        )
    })
    .unwrap_err();
    assert!(err.downcast_ref::<String>().unwrap().contains("50×200"));
    let err = catch_unwind(|| {
        compare_screenshot_to_reference(
            "harness-missing",
            &encode(100, 100, &reference),
            dir.path(),
        )
    })
    .unwrap_err();
    assert!(
        err.downcast_ref::<String>()
            .unwrap()
            .contains("NANOCLAW_UPDATE_SCREENSHOTS=1")
    );
}
