//! The profiler: batching shows as few submissions, the table and the trace are complete.

use crate::common::*;
use convirt::Tensor;

#[test]
fn two_hundred_small_ops_take_few_submissions() {
    let g = private_gpu(true);
    let mut x = Tensor::from_slice(&g, &[1.0; 64], &[64]).unwrap();
    g.set_profiling(true).unwrap();
    for _ in 0..200 {
        x = x.affine(1.0, 0.5).unwrap();
    }
    assert_eq!(x.to_vec().unwrap()[0], 101.0);
    let p = g.profile().unwrap();
    let row = p
        .table()
        .into_iter()
        .find(|r| r.name == "unary.affine")
        .expect("affine row");
    assert_eq!(row.calls, 200);
    assert!(row.total_ms > 0.0 && row.mean_us > 0.0);
    if p.timer == "GPU timestamps" {
        assert!(
            p.submissions() <= 2,
            "200 ops took {} submissions",
            p.submissions()
        );
    }
    let table = p.to_string();
    assert!(table.contains("dispatches per submission"), "{table}");

    let trace = p.trace_json();
    assert!(trace.starts_with("{\"displayTimeUnit\""));
    assert_eq!(trace.matches("\"cat\":\"kernel\"").count(), 200);
    assert_eq!(trace.matches('{').count(), trace.matches('}').count());
    g.set_profiling(false).unwrap();
}

#[test]
fn profiling_off_records_nothing() {
    let g = private_gpu(false);
    let x = Tensor::from_slice(&g, &[1.0; 8], &[8]).unwrap();
    let _ = x.relu().unwrap().to_vec().unwrap();
    assert_eq!(g.profile().unwrap().dispatches(), 0);
    let (dispatches, submissions) = g.counters();
    assert!(dispatches >= 1 && submissions >= 1);
}
