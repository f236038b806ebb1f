//! Spread ranking under placement preferences: a tree whose levels split the nodes by the
//! value of each preference's label (nodes without it share the branch of the empty value),
//! and whose leaves rank nodes by (tasks of the service, tasks overall). A task goes down
//! the branch holding the fewest tasks of the service at each level, then to the leaf's
//! best node that fits.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use swarm_api::spec::SpreadOver;

/// (tasks of the service on the node, tasks on the node), smallest first.
pub(super) type Rank = (u64, u64);

pub(super) enum Tree {
    Leaf(BinaryHeap<Reverse<(Rank, usize)>>),
    /// Branches sorted by label value, each with the service's tasks under it.
    Split(Vec<Branch>),
}

pub(super) struct Branch {
    value: String,
    tasks: u64,
    tree: Tree,
}

impl Tree {
    /// The tree over `nodes` (indexes) for `preferences`.
    pub(super) fn new<'l>(
        nodes: &[usize],
        preferences: &[SpreadOver],
        labels: impl Fn(usize) -> &'l BTreeMap<String, String> + Copy,
        rank: impl Fn(usize) -> Rank + Copy,
        service_tasks: impl Fn(usize) -> u64 + Copy,
    ) -> Tree {
        let Some((preference, rest)) = preferences.split_first() else {
            return Tree::Leaf(nodes.iter().map(|&i| Reverse((rank(i), i))).collect());
        };
        // What is no label (`node.id`) splits nothing, as swarmkit skips it.
        let Some(label) = preference.label() else {
            return Tree::new(nodes, rest, labels, rank, service_tasks);
        };
        let mut by_value: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &i in nodes {
            let value = labels(i).get(label).cloned().unwrap_or_default();
            by_value.entry(value).or_default().push(i);
        }
        Tree::Split(
            by_value
                .into_iter()
                .map(|(value, members)| Branch {
                    tasks: members.iter().map(|&i| service_tasks(i)).sum(),
                    tree: Tree::new(&members, rest, labels, rank, service_tasks),
                    value,
                })
                .collect(),
        )
    }

    /// Places one task: the best node that `fits`, ranked as it would be with the task.
    /// Nodes that do not fit leave the tree (they will not fit later tasks of the group).
    pub(super) fn take(&mut self, fits: &mut impl FnMut(usize) -> bool) -> Option<usize> {
        match self {
            Tree::Leaf(heap) => loop {
                let Reverse(((service, all), i)) = *heap.peek()?;
                if fits(i) {
                    heap.pop();
                    heap.push(Reverse(((service + 1, all + 1), i)));
                    return Some(i);
                }
                heap.pop();
            },
            Tree::Split(branches) => loop {
                // The first of the emptiest branches: ties go to the smallest value.
                let (best, _) = branches
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, branch)| branch.tasks)?;
                match branches[best].tree.take(fits) {
                    Some(i) => {
                        branches[best].tasks += 1;
                        return Some(i);
                    }
                    None => {
                        branches.remove(best);
                    }
                }
            },
        }
    }
}

impl std::fmt::Debug for Branch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} tasks", self.value, self.tasks)
    }
}
