//! A purchase body on its way in: the bytes of a typical JSON purchase parsed into the typed body
//! and validated, as the purchase routes do before any strategy runs. Beside it, in the same group,
//! `serde_json` parsing the same bytes into an untyped `Value`: the cost of JSON alone, so what
//! the typed body and its checks add reads off one run. No backend is involved.

use std::hint::black_box;

use checkout_bench::http::extract::PurchaseBody;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// What the load generator sends for one unit of the hot product.
const BODY: &[u8] = br#"{"items":[{"product_id":100,"quantity":1}],"delivery":{"address":"1 Main St, Kyiv","phone":"+380441234567","email":"buyer@example.com"},"user":"buyer-1234"}"#;

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("purchase_body_parse");
    group.throughput(Throughput::Bytes(BODY.len() as u64));
    group.bench_function("serde_json_value", |b| {
        b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(BODY)).expect("JSON")));
    });
    group.bench_function("typed_body", |b| {
        b.iter(|| black_box(serde_json::from_slice::<PurchaseBody>(black_box(BODY)).expect("a purchase")));
    });
    group.bench_function("typed_body_validated", |b| {
        b.iter(|| {
            let body: PurchaseBody = serde_json::from_slice(black_box(BODY)).expect("a purchase");
            black_box(body.validate().expect("valid"))
        });
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
