//! A seeded stochastic block model with class-dependent features: a graph of any size whose
//! classes a GNN can learn, for tests and for the scale benchmark.
//!
//! Node `i` belongs to class `i % num_classes`. Each of `num_links` undirected links starts at a
//! random node and ends, with probability `homophily`, at a random node of the same class, else at
//! any node; the graph keeps both directions (so `edge_index` has up to `2 * num_links` columns,
//! fewer where a pair repeats or a link is a loop). Features are the class's random centroid plus
//! uniform noise of the same scale.

use super::{Graph, undirected_edges};
use crate::SplitMix64;

/// The shape of a synthetic graph.
#[derive(Debug, Clone, Copy)]
pub struct SbmConfig {
    /// Nodes.
    pub num_nodes: usize,
    /// Undirected links drawn (before loops and repeats are dropped).
    pub num_links: usize,
    /// Features per node.
    pub num_features: usize,
    /// Classes.
    pub num_classes: usize,
    /// Probability that a link stays within its class.
    pub homophily: f32,
    /// Seed of everything random.
    pub seed: u64,
}

impl SbmConfig {
    /// Draws the graph. Errors on a config that cannot make one (no nodes, no classes, more
    /// classes than nodes, or a probability outside `[0, 1]`).
    pub fn generate(&self) -> Result<Graph, String> {
        let (n, k) = (self.num_nodes, self.num_classes);
        if n == 0 || k == 0 || k > n {
            return Err(format!(
                "a synthetic graph needs 1 <= num_classes <= num_nodes, got {k} classes and {n} nodes"
            ));
        }
        if !(0.0..=1.0).contains(&self.homophily) {
            return Err(format!(
                "homophily must be in [0, 1], got {}",
                self.homophily
            ));
        }
        let mut rng = SplitMix64::new(self.seed);
        let d = self.num_features;
        let centroids: Vec<f32> = (0..k * d).map(|_| rng.symmetric(1.0)).collect();
        let labels: Vec<usize> = (0..n).map(|i| i % k).collect();
        let mut features = Vec::with_capacity(n * d);
        for &class in &labels {
            let centroid = &centroids[class * d..(class + 1) * d];
            features.extend(centroid.iter().map(|c| c + rng.symmetric(1.0)));
        }
        let pairs: Vec<(usize, usize)> = (0..self.num_links)
            .map(|_| {
                let a = rng.below(n);
                let b = if rng.next_f32() < self.homophily {
                    // Another node of a's class: a's class plus a random multiple of k.
                    let members = (n - a % k).div_ceil(k);
                    a % k + rng.below(members) * k
                } else {
                    rng.below(n)
                };
                (a, b)
            })
            .collect();
        let (sources, targets) = undirected_edges(pairs);
        Ok(Graph {
            num_nodes: n,
            num_features: d,
            features,
            sources,
            targets,
            labels,
            class_names: (0..k).map(|c| format!("block {c}")).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SbmConfig {
        SbmConfig {
            num_nodes: 2000,
            num_links: 1000,
            num_features: 8,
            num_classes: 4,
            homophily: 0.9,
            seed: 3,
        }
    }

    #[test]
    fn the_graph_has_the_asked_shape_and_is_seeded() {
        let g = config().generate().unwrap();
        assert_eq!((g.num_nodes, g.num_features, g.num_classes()), (2000, 8, 4));
        assert_eq!(g.features.len(), 2000 * 8);
        assert!(
            g.num_edges() > 1950 && g.num_edges() <= 2000,
            "{}",
            g.num_edges()
        );
        assert!(
            g.sources
                .iter()
                .chain(&g.targets)
                .all(|&i| (0..2000).contains(&i))
        );
        let again = config().generate().unwrap();
        assert_eq!((g.sources, g.features), (again.sources, again.features));
    }

    #[test]
    fn links_mostly_stay_within_a_class() {
        let g = config().generate().unwrap();
        let within = g
            .sources
            .iter()
            .zip(&g.targets)
            .filter(|&(&a, &b)| g.labels[a as usize] == g.labels[b as usize])
            .count();
        // 90% homophily plus a quarter of the random 10%.
        let share = within as f32 / g.num_edges() as f32;
        assert!((0.88..0.96).contains(&share), "{share}");
    }

    #[test]
    fn bad_configs_are_errors() {
        let mut c = config();
        c.num_classes = 0;
        assert!(c.generate().is_err());
        let mut c = config();
        c.homophily = 1.5;
        assert!(c.generate().unwrap_err().contains("homophily"));
    }
}
