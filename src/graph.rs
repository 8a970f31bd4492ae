//! The dependency graph of the stack's resources: creation order, cycles, and the closure of a target.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::model::{Model, ResourceId};

/// Edges run from a dependency to the resource that needs it (the order of creation); each edge carries the
/// field that made it.
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    graph: DiGraph<ResourceId, String>,
    nodes: BTreeMap<ResourceId, NodeIndex>,
}

/// Resources that depend on each other in a ring, in the order of the ring (each depends on the next).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub members: Vec<ResourceId>,
}

impl DependencyGraph {
    pub fn build(model: &Model) -> Self {
        let mut graph = DependencyGraph::default();
        for id in model.resources.keys() {
            graph.add_node(id.clone());
        }
        for (id, resource) in &model.resources {
            for dependency in resource.dependencies() {
                // A reference to a resource that failed validation has no node; validation reported it already.
                if model.resources.contains_key(&dependency.on) {
                    graph.add_edge(&dependency.on, id, dependency.field);
                }
            }
        }
        graph
    }

    pub fn add_node(&mut self, id: ResourceId) {
        if !self.nodes.contains_key(&id) {
            let index = self.graph.add_node(id.clone());
            self.nodes.insert(id, index);
        }
    }

    /// `dependent` needs `dependency`. Both must be nodes already.
    pub fn add_edge(&mut self, dependency: &ResourceId, dependent: &ResourceId, field: String) {
        self.graph.add_edge(self.nodes[dependency], self.nodes[dependent], field);
    }

    pub fn contains(&self, id: &ResourceId) -> bool {
        self.nodes.contains_key(id)
    }

    /// The resources `id` needs directly.
    pub fn dependencies(&self, id: &ResourceId) -> BTreeSet<ResourceId> {
        self.neighbors(id, Direction::Incoming)
    }

    /// The resources that need `id` directly.
    pub fn dependents(&self, id: &ResourceId) -> BTreeSet<ResourceId> {
        self.neighbors(id, Direction::Outgoing)
    }

    fn neighbors(&self, id: &ResourceId, direction: Direction) -> BTreeSet<ResourceId> {
        match self.nodes.get(id) {
            Some(&node) => self.graph.neighbors_directed(node, direction).map(|n| self.graph[n].clone()).collect(),
            None => BTreeSet::new(),
        }
    }

    /// `targets` with everything they depend on, transitively.
    pub fn with_dependencies(&self, targets: &BTreeSet<ResourceId>) -> BTreeSet<ResourceId> {
        self.closure(targets, Direction::Incoming)
    }

    /// `roots` with everything that depends on them, transitively.
    pub fn with_dependents(&self, roots: &BTreeSet<ResourceId>) -> BTreeSet<ResourceId> {
        self.closure(roots, Direction::Outgoing)
    }

    fn closure(&self, start: &BTreeSet<ResourceId>, direction: Direction) -> BTreeSet<ResourceId> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<NodeIndex> = start.iter().filter_map(|id| self.nodes.get(id).copied()).collect();
        while let Some(node) = stack.pop() {
            if seen.insert(self.graph[node].clone()) {
                stack.extend(self.graph.neighbors_directed(node, direction));
            }
        }
        seen
    }

    /// Every resource after the ones it depends on. Among resources whose dependencies are all placed, the
    /// smallest `Kind/name` comes first, so the order is stable from run to run.
    pub fn order(&self) -> Result<Vec<ResourceId>, Cycle> {
        if let Some(cycle) = self.find_cycle() {
            return Err(cycle);
        }
        let mut waiting: BTreeMap<NodeIndex, usize> = self
            .graph
            .node_indices()
            .map(|n| (n, self.graph.neighbors_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: BTreeSet<&ResourceId> =
            waiting.iter().filter(|(_, count)| **count == 0).map(|(n, _)| &self.graph[*n]).collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(id) = ready.pop_first() {
            order.push(id.clone());
            for next in self.graph.neighbors_directed(self.nodes[id], Direction::Outgoing) {
                let count = waiting.get_mut(&next).expect("every node is counted");
                *count -= 1;
                if *count == 0 {
                    ready.insert(&self.graph[next]);
                }
            }
        }
        Ok(order)
    }

    fn find_cycle(&self) -> Option<Cycle> {
        let components = tarjan_scc(&self.graph);
        let ring = components
            .into_iter()
            .filter(|c| c.len() > 1 || self.graph.contains_edge(c[0], c[0]))
            .min_by_key(|c| c.iter().map(|n| self.graph[*n].clone()).min())?;
        let members: BTreeSet<NodeIndex> = ring.iter().copied().collect();
        let start = *ring.iter().min_by_key(|n| &self.graph[**n])?;
        // Walk "depends on" edges (incoming) inside the component until the walk returns to the start.
        let mut path = vec![start];
        let mut seen = BTreeSet::from([start]);
        let mut current = start;
        loop {
            let mut next_candidates: Vec<NodeIndex> = self
                .graph
                .edges_directed(current, Direction::Incoming)
                .map(|e| e.source())
                .filter(|n| members.contains(n))
                .collect();
            next_candidates.sort_by_key(|n| self.graph[*n].clone());
            if next_candidates.contains(&start) {
                break;
            }
            let next = next_candidates.into_iter().find(|n| !seen.contains(n))?;
            seen.insert(next);
            path.push(next);
            current = next;
        }
        Some(Cycle { members: path.into_iter().map(|n| self.graph[n].clone()).collect() })
    }

    /// Graphviz DOT: an arrow from each resource to the resources it needs, labelled with the field.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph imagectl {\n  rankdir=LR;\n  node [shape=box];\n");
        for id in self.nodes.keys() {
            out.push_str(&format!("  \"{id}\";\n"));
        }
        let mut edges: Vec<_> = self
            .graph
            .edge_references()
            .map(|e| (&self.graph[e.target()], &self.graph[e.source()], e.weight()))
            .collect();
        edges.sort();
        for (dependent, dependency, field) in edges {
            out.push_str(&format!("  \"{dependent}\" -> \"{dependency}\" [label=\"{field}\"];\n"));
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn id(kind: Kind, name: &str) -> ResourceId {
        ResourceId::new(kind, name)
    }

    fn graph(edges: &[(ResourceId, ResourceId)]) -> DependencyGraph {
        let mut g = DependencyGraph::default();
        for (a, b) in edges {
            g.add_node(a.clone());
            g.add_node(b.clone());
            g.add_edge(a, b, "spec.x".into());
        }
        g
    }

    #[test]
    fn orders_dependencies_first_and_stably() {
        let role = id(Kind::Role, "r");
        let profile = id(Kind::InstanceProfile, "p");
        let bucket = id(Kind::Bucket, "b");
        let image = id(Kind::PrivateImage, "i");
        let g = graph(&[
            (role.clone(), profile.clone()),
            (profile.clone(), image.clone()),
            (bucket.clone(), image.clone()),
        ]);
        assert_eq!(g.order().unwrap(), vec![role.clone(), profile.clone(), bucket.clone(), image.clone()]);
        assert_eq!(
            g.with_dependencies(&BTreeSet::from([profile.clone()])),
            BTreeSet::from([role.clone(), profile.clone()])
        );
        assert_eq!(g.with_dependents(&BTreeSet::from([role.clone()])), BTreeSet::from([role, profile, image]));
    }

    #[test]
    fn reports_the_ring_of_a_cycle() {
        let a = id(Kind::PrivateImage, "a");
        let b = id(Kind::PrivateImage, "b");
        let c = id(Kind::PrivateImage, "c");
        let other = id(Kind::Role, "r");
        // a needs c, c needs b, b needs a.
        let g = graph(&[
            (c.clone(), a.clone()),
            (b.clone(), c.clone()),
            (a.clone(), b.clone()),
            (other.clone(), a.clone()),
        ]);
        let cycle = g.order().unwrap_err();
        assert_eq!(cycle.members, vec![a, c, b]);
    }
}
