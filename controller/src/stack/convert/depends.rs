//! `depends_on`: each service's dependencies, services of the same stack, and the cycles
//! among them, each an error at the entry that closes it, naming its path.

use std::collections::{BTreeMap, BTreeSet};

use swarm_api::spec::{Dependency, DependencyCondition};
use swarm_api::stackfile::{self as file, DependsOn};

use super::{Converter, Loc};

/// A service's dependencies as written: (service key, condition, whether it is required),
/// in the file's order.
fn written(
    depends_on: Option<&DependsOn>,
) -> Vec<(String, Option<file::DependencyCondition>, bool)> {
    match depends_on {
        None => Vec::new(),
        Some(DependsOn::List(names)) => names.iter().map(|n| (n.clone(), None, true)).collect(),
        Some(DependsOn::Map(map)) => map
            .iter()
            .map(|(name, d)| (name.clone(), d.condition, d.required.unwrap_or(true)))
            .collect(),
    }
}

/// Where the entry naming `dependency` is, under a service's `depends_on`.
fn entry<'n>(depends_on: Option<&DependsOn>, loc: &Loc<'n>, dependency: &str) -> Loc<'n> {
    match depends_on {
        Some(DependsOn::List(names)) => {
            let index = names.iter().position(|n| n == dependency).unwrap_or(0);
            loc.index(index)
        }
        _ => loc.key(dependency),
    }
}

impl Converter<'_> {
    /// Service `key`'s dependencies, by full name, sorted; `services` is the stack's.
    pub(super) fn dependencies(
        &mut self,
        key: &str,
        service: &file::Service,
        services: &BTreeMap<String, file::Service>,
        loc: &Loc,
    ) -> Vec<Dependency> {
        let mut out: Vec<Dependency> = Vec::new();
        for (name, condition, required) in written(service.depends_on.as_ref()) {
            let at = entry(service.depends_on.as_ref(), loc, &name);
            let condition = match condition {
                None | Some(file::DependencyCondition::ServiceStarted) => {
                    DependencyCondition::ServiceStarted
                }
                Some(file::DependencyCondition::ServiceHealthy) => {
                    DependencyCondition::ServiceHealthy
                }
                Some(file::DependencyCondition::ServiceCompletedSuccessfully) => {
                    // Only a job's tasks complete: any other service's are restarted, and
                    // its dependents would wait for ever.
                    let job = services
                        .get(&name)
                        .and_then(|s| s.deploy.as_ref()?.mode)
                        .is_some_and(|mode| {
                            matches!(
                                mode,
                                file::DeployMode::ReplicatedJob | file::DeployMode::GlobalJob
                            )
                        });
                    if services.contains_key(&name) && !job {
                        self.diags
                            .error(
                                at.key("condition").span(),
                                &at.key("condition").path,
                                format!(
                                    "condition service_completed_successfully needs a job, and service {name:?} is not one: its tasks never complete"
                                ),
                            )
                            .help(format!(
                                "give {name:?} deploy.mode: replicated-job (or global-job), or use service_started or service_healthy"
                            ));
                        continue;
                    }
                    DependencyCondition::ServiceCompletedSuccessfully
                }
            };
            if name == key {
                // A cycle of one: reported with the others.
                continue;
            }
            if !services.contains_key(&name) {
                if required {
                    let diagnostic = self.diags.error(
                        at.span(),
                        &at.path,
                        format!("depends on service {name:?}, which the stack does not have"),
                    );
                    match super::super::diagnostic::did_you_mean(
                        &name,
                        services.keys().map(String::as_str),
                    ) {
                        Some(close) => diagnostic.help(format!("did you mean {close:?}?")),
                        None => diagnostic.help("name a service of this stack"),
                    };
                } else {
                    self.diags.warning(
                        at.span(),
                        &at.path,
                        format!(
                            "service {name:?} is not in the stack: not waited for (required: false)"
                        ),
                    );
                }
                continue;
            }
            out.push(Dependency {
                service: format!("{}_{name}", self.stack),
                condition,
            });
        }
        out.sort();
        out.dedup_by(|a, b| a.service == b.service);
        out
    }

    /// An error for each cycle of `depends_on` among `services`, at the entry that closes
    /// it: `a → b → a`.
    pub(super) fn dependency_cycles(
        &mut self,
        services: &BTreeMap<String, file::Service>,
        top: &Loc,
    ) {
        let edges: BTreeMap<String, Vec<String>> = services
            .iter()
            .map(|(key, s)| {
                let targets = written(s.depends_on.as_ref())
                    .into_iter()
                    .map(|(name, _, _)| name)
                    .filter(|name| services.contains_key(name))
                    .collect();
                (key.clone(), targets)
            })
            .collect();
        for cycle in cycles(&edges) {
            self.report_cycle(services, top, &cycle);
        }
    }

    /// `cycle` is closed (`[a, b, a]`): the error is at the entry of its last edge.
    fn report_cycle(
        &mut self,
        services: &BTreeMap<String, file::Service>,
        top: &Loc,
        cycle: &[String],
    ) {
        let [.., last, closing] = cycle else {
            return;
        };
        let loc = top.key("services").key(last).key("depends_on");
        let at = entry(services[last].depends_on.as_ref(), &loc, closing);
        self.diags
            .error(
                at.span(),
                &at.path,
                format!("depends_on cycle: {}", cycle.join(" → ")),
            )
            .help(
                "services that wait for each other never start: remove one of these dependencies",
            );
    }
}

/// The cycles of a dependency graph (each node → the nodes it depends on), each once
/// however many paths lead into it, as the closed path met first (`[a, b, a]`). Shared by
/// the stack loader (services by key) and the store's guard (services by name).
pub(crate) fn cycles(edges: &BTreeMap<String, Vec<String>>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
    for start in edges.keys() {
        // Depth first, without recursion: the path from `start`, each node with the index
        // of its next edge to follow.
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        while let Some((node, next)) = path.last().copied() {
            let target = match edges.get(node).and_then(|targets| targets.get(next)) {
                Some(target) if !done.contains(node) => target.as_str(),
                _ => {
                    done.insert(node);
                    path.pop();
                    continue;
                }
            };
            path.last_mut().expect("not empty").1 += 1;
            if let Some(from) = path.iter().position(|(n, _)| *n == target) {
                let cycle: Vec<&str> = path[from..].iter().map(|(n, _)| *n).collect();
                // One rotation stands for the cycle: the one from its least name.
                let least = (0..cycle.len())
                    .min_by_key(|&i| cycle[i])
                    .expect("a cycle has a node");
                let mut canonical = cycle.clone();
                canonical.rotate_left(least);
                if reported.insert(canonical) {
                    let closed = cycle.iter().chain([&target]).map(|n| (*n).to_owned());
                    found.push(closed.collect());
                }
            } else if !done.contains(target) {
                path.push((target, 0));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cycle_once_as_first_met() {
        let edges: BTreeMap<String, Vec<String>> = [
            ("a", vec!["b"]),
            ("b", vec!["c", "d"]),
            ("c", vec!["a"]),
            ("d", vec!["d"]),
            ("e", vec!["a", "f"]),
            ("f", vec![]),
            ("g", vec!["missing"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(cycles(&edges), [vec!["a", "b", "c", "a"], vec!["d", "d"]]);
        let acyclic: BTreeMap<String, Vec<String>> = [
            ("a".to_owned(), vec!["b".to_owned()]),
            ("b".to_owned(), vec![]),
        ]
        .into();
        assert!(cycles(&acyclic).is_empty());
    }
}
