//! Executes a plan: changes in dependency order, independent ones concurrently, a failure skipping only what
//! depends on it. It decides nothing the plan did not decide.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use crate::model::ResourceId;
use crate::plan::{Action, Change, Plan, Step};

/// Runs one step against AWS. Implemented by `aws::Aws`; every step is idempotent there.
pub trait StepRunner {
    type Error: Display;
    fn run_step(&self, step: &Step) -> impl Future<Output = Result<(), Self::Error>>;
}

/// What happened to one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done {
        elapsed: Duration,
    },
    /// The step that failed and the AWS error (code and message).
    Failed {
        step: String,
        error: String,
        elapsed: Duration,
    },
    /// Not started because a change it waits for did not succeed.
    Skipped {
        because: ResourceId,
    },
}

/// Progress as changes start and finish, for the terminal.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Started { change: &'a Change },
    Finished { change: &'a Change, outcome: &'a Outcome },
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In the order the changes finished (or were skipped).
    pub outcomes: Vec<(ResourceId, Action, Outcome)>,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        self.outcomes.iter().all(|(_, _, o)| matches!(o, Outcome::Done { .. }))
    }

    pub fn count(&self, pick: fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, _, o)| pick(o)).count()
    }
}

/// Runs the plan's changes with at most `parallelism` at a time.
pub async fn execute<R: StepRunner>(
    plan: &Plan,
    runner: &R,
    parallelism: usize,
    mut progress: impl FnMut(Event<'_>),
) -> Report {
    let changes = &plan.changes;
    let index: BTreeMap<&ResourceId, usize> = changes.iter().enumerate().map(|(i, c)| (&c.resource, i)).collect();
    let mut waiting_on: Vec<usize> = vec![0; changes.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
    for (i, change) in changes.iter().enumerate() {
        for before in &change.after {
            if let Some(&j) = index.get(before) {
                waiting_on[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..changes.len()).filter(|i| waiting_on[*i] == 0).collect();
    let mut settled = vec![false; changes.len()];
    let mut report = Report::default();
    let mut running = FuturesUnordered::new();
    let parallelism = parallelism.max(1);
    loop {
        while running.len() < parallelism {
            let Some(i) = ready.pop_front() else { break };
            progress(Event::Started { change: &changes[i] });
            running.push(async move { (i, run_change(&changes[i], runner).await) });
        }
        let Some((i, outcome)) = running.next().await else {
            break;
        };
        settled[i] = true;
        progress(Event::Finished { change: &changes[i], outcome: &outcome });
        let succeeded = matches!(outcome, Outcome::Done { .. });
        report.outcomes.push((changes[i].resource.clone(), changes[i].action, outcome));
        if succeeded {
            for &d in &dependents[i] {
                waiting_on[d] -= 1;
                if waiting_on[d] == 0 && !settled[d] {
                    ready.push_back(d);
                }
            }
        } else {
            skip_dependents(i, changes, &dependents, &mut settled, &mut report, &mut progress);
        }
    }
    report
}

/// Marks everything downstream of a failed change as skipped, naming the failure it waits for.
fn skip_dependents(
    failed: usize,
    changes: &[Change],
    dependents: &[Vec<usize>],
    settled: &mut [bool],
    report: &mut Report,
    progress: &mut impl FnMut(Event<'_>),
) {
    let because = changes[failed].resource.clone();
    let mut stack = dependents[failed].clone();
    while let Some(d) = stack.pop() {
        if settled[d] {
            continue;
        }
        settled[d] = true;
        let outcome = Outcome::Skipped { because: because.clone() };
        progress(Event::Finished { change: &changes[d], outcome: &outcome });
        report.outcomes.push((changes[d].resource.clone(), changes[d].action, outcome));
        stack.extend(dependents[d].iter().copied());
    }
}

/// A change's steps run in order; the first failure ends the change.
async fn run_change<R: StepRunner>(change: &Change, runner: &R) -> Outcome {
    let started = Instant::now();
    for step in &change.steps {
        if let Err(error) = runner.run_step(step).await {
            return Outcome::Failed { step: step.describe(), error: error.to_string(), elapsed: started.elapsed() };
        }
    }
    Outcome::Done { elapsed: started.elapsed() }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::Kind;
    use crate::plan::{PlanInputs, PlanOptions, FORMAT_VERSION};

    /// Records the order steps ran in and fails the steps it is told to; the scheduling is what is under test.
    struct Recorder {
        ran: RefCell<Vec<String>>,
        fail: BTreeSet<String>,
    }

    impl StepRunner for Recorder {
        type Error = String;
        async fn run_step(&self, step: &Step) -> Result<(), String> {
            let Step::DeleteRole { role } = step else { unreachable!() };
            tokio::task::yield_now().await;
            self.ran.borrow_mut().push(role.clone());
            if self.fail.contains(role) {
                Err(format!("AccessDenied: no {role}"))
            } else {
                Ok(())
            }
        }
    }

    fn change(name: &str, after: &[&str]) -> Change {
        Change {
            resource: ResourceId::new(Kind::Role, name),
            action: Action::Delete,
            reason: None,
            fields: Vec::new(),
            steps: vec![Step::DeleteRole { role: name.to_owned() }],
            after: after.iter().map(|a| ResourceId::new(Kind::Role, *a)).collect(),
        }
    }

    fn plan(changes: Vec<Change>) -> Plan {
        Plan {
            format_version: FORMAT_VERSION,
            stack: "s".into(),
            account: None,
            options: PlanOptions::default(),
            changes,
            conflicts: Vec::new(),
            notes: Vec::new(),
            unchanged: 0,
            inputs: PlanInputs { paths: Vec::new(), manifest_digest: String::new(), live: BTreeMap::new() },
        }
    }

    #[tokio::test]
    async fn a_failure_skips_its_dependents_and_lets_independent_branches_finish() {
        let plan = plan(vec![
            change("a", &[]),
            change("b", &["a"]),
            change("c", &["b"]),
            change("x", &[]),
            change("y", &["x"]),
        ]);
        let runner = Recorder { ran: RefCell::new(Vec::new()), fail: BTreeSet::from(["a".to_owned()]) };
        let report = execute(&plan, &runner, 4, |_| {}).await;
        let by_name: BTreeMap<String, Outcome> =
            report.outcomes.iter().map(|(id, _, o)| (id.name.clone(), o.clone())).collect();
        assert!(matches!(&by_name["a"], Outcome::Failed { error, .. } if error.contains("AccessDenied")));
        assert_eq!(by_name["b"], Outcome::Skipped { because: ResourceId::new(Kind::Role, "a") });
        assert_eq!(by_name["c"], Outcome::Skipped { because: ResourceId::new(Kind::Role, "a") });
        assert!(matches!(by_name["x"], Outcome::Done { .. }));
        assert!(matches!(by_name["y"], Outcome::Done { .. }));
        let ran = runner.ran.borrow();
        assert!(!ran.contains(&"b".to_owned()));
        assert!(ran.iter().position(|r| r == "x") < ran.iter().position(|r| r == "y"));
        assert!(!report.succeeded());
    }

    #[tokio::test]
    async fn dependencies_finish_before_dependents_start() {
        let plan = plan(vec![change("a", &[]), change("b", &["a"]), change("c", &["a", "b"])]);
        let runner = Recorder { ran: RefCell::new(Vec::new()), fail: BTreeSet::new() };
        let mut started = Vec::new();
        let report = execute(&plan, &runner, 8, |e| {
            if let Event::Started { change } = e {
                started.push(change.resource.name.clone());
            }
        })
        .await;
        assert!(report.succeeded());
        assert_eq!(*runner.ran.borrow(), vec!["a", "b", "c"]);
        assert_eq!(started, vec!["a", "b", "c"]);
    }
}
