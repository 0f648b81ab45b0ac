//! One event to N subscribers of one channel: (a) all with the same selection, (b) spread over
//! 10 distinct selections. Throughput is in deliveries, so criterion's "thrpt" is deliveries per
//! second and time / N is the time per delivery.

mod support;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use support::Fanout;

fn fanout(c: &mut Criterion) {
    for (name, selections) in [("same_selection", 1), ("ten_selections", 10)] {
        let mut group = c.benchmark_group(format!("fanout/{name}"));
        for subscribers in [1usize, 100, 10_000] {
            if subscribers < selections {
                continue;
            }
            let mut fixture = Fanout::new(subscribers, selections);
            group.throughput(Throughput::Elements(subscribers as u64));
            group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
                b.iter(|| fixture.deliver_one());
            });
        }
        group.finish();
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
