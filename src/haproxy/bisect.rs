//! Finding the members a config cannot hold, by halves: the pure core of "one bad member never
//! blocks the others". The sync asks [`Bisect::step`] which members to render, renders and
//! checks them (`haproxy -c`), and answers with [`Bisect::answer`]; no I/O here.
//!
//! The order of the questions:
//!
//! 1. every candidate: the usual case, one check, and done;
//! 2. no candidate: when even that fails, the template (or the rest of the config) is at
//!    fault, not a member ([`Step::TemplateFault`]);
//! 3. halves: a group that passes beside the members accepted so far is accepted whole; one
//!    that fails is split, down to single members, which are the offenders.
//!
//! Every set asked about is the members accepted so far plus one group, so the last set that
//! passed is exactly the final accepted set: the caller keeps that render and writes it. With
//! `k` offenders among `n` members it takes about `2 + 2·k·log2(n)` checks.

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Render and check these candidates (indices, ascending), then [`Bisect::answer`].
    Check(Vec<usize>),
    /// Finished: the last set that passed is the result; these candidates are left out.
    Done {
        /// The offenders (indices, ascending).
        bad: Vec<usize>,
    },
    /// Even no candidate fails: the template is at fault.
    TemplateFault,
}

/// The search state.
#[derive(Debug, Clone)]
pub struct Bisect {
    n: usize,
    /// Accepted so far.
    good: Vec<usize>,
    /// Found to fail on their own (beside `good`).
    bad: Vec<usize>,
    /// Groups still to try; the last is next.
    todo: Vec<Vec<usize>>,
    /// The question asked and not answered yet.
    asked: Option<Question>,
    /// Where the search stands.
    phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Question {
    All,
    None,
    Group(Vec<usize>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Searching,
    Done,
    TemplateFault,
}

impl Bisect {
    /// A search over `n` candidates.
    pub fn new(n: usize) -> Bisect {
        Bisect {
            n,
            good: Vec::new(),
            bad: Vec::new(),
            todo: Vec::new(),
            asked: None,
            phase: Phase::Start,
        }
    }

    /// The next step (the same question again until it is answered).
    pub fn step(&mut self) -> Step {
        if let Some(q) = &self.asked {
            return self.set(q);
        }
        match self.phase {
            Phase::Start => self.ask(Question::All),
            Phase::TemplateFault => Step::TemplateFault,
            Phase::Done => Step::Done {
                bad: self.bad.clone(),
            },
            Phase::Searching => match self.todo.pop() {
                Some(g) => self.ask(Question::Group(g)),
                None => {
                    self.phase = Phase::Done;
                    self.bad.sort_unstable();
                    Step::Done {
                        bad: self.bad.clone(),
                    }
                }
            },
        }
    }

    /// Whether the set of the last [`Step::Check`] passed; returns the candidate this answer
    /// finds at fault, if any (the failure's reason is that candidate's).
    pub fn answer(&mut self, passed: bool) -> Option<usize> {
        let q = self.asked.take()?;
        match (q, passed) {
            (Question::All, true) => {
                self.good = (0..self.n).collect();
                self.phase = Phase::Done;
            }
            (Question::All, false) if self.n == 0 => self.phase = Phase::TemplateFault,
            (Question::All, false) => self.asked = Some(Question::None),
            (Question::None, true) => {
                self.phase = Phase::Searching;
                if self.n == 1 {
                    // Asked again alone, so the failure found is its own.
                    self.todo.push(vec![0]);
                } else {
                    self.split((0..self.n).collect());
                }
            }
            (Question::None, false) => self.phase = Phase::TemplateFault,
            (Question::Group(g), true) => {
                self.good.extend(g);
                self.good.sort_unstable();
            }
            (Question::Group(g), false) if g.len() == 1 => {
                self.bad.extend(&g);
                return g.first().copied();
            }
            (Question::Group(g), false) => self.split(g),
        }
        None
    }

    /// Queues the two halves of `g`, the first half to be tried first.
    fn split(&mut self, mut g: Vec<usize>) {
        let second = g.split_off(g.len() / 2);
        self.todo.push(second);
        self.todo.push(g);
    }

    fn ask(&mut self, q: Question) -> Step {
        let step = self.set(&q);
        self.asked = Some(q);
        step
    }

    /// The candidates to render for a question.
    fn set(&self, q: &Question) -> Step {
        match q {
            Question::All => Step::Check((0..self.n).collect()),
            Question::None => Step::Check(Vec::new()),
            Question::Group(g) => {
                let mut s: Vec<usize> = self.good.iter().chain(g).copied().collect();
                s.sort_unstable();
                Step::Check(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search over `n` candidates where a set passes when `passes` says so; returns the
    /// outcome, the number of checks and the last set that passed.
    fn run(n: usize, passes: impl Fn(&[usize]) -> bool) -> (Step, usize, Option<Vec<usize>>) {
        let mut b = Bisect::new(n);
        let mut checks = 0;
        let mut last = None;
        loop {
            match b.step() {
                Step::Check(set) => {
                    checks += 1;
                    assert!(checks < 10_000, "no end");
                    let ok = passes(&set);
                    if ok {
                        last = Some(set.clone());
                    }
                    if let Some(i) = b.answer(ok) {
                        assert!(set.contains(&i), "the offender was in the set that failed");
                    }
                }
                done => return (done, checks, last),
            }
        }
    }

    fn check(n: usize, bad: &[usize]) {
        let (step, checks, last) = run(n, |set| !set.iter().any(|i| bad.contains(i)));
        assert_eq!(step, Step::Done { bad: bad.to_vec() }, "n={n} bad={bad:?}");
        let good: Vec<usize> = (0..n).filter(|i| !bad.contains(i)).collect();
        assert_eq!(last, Some(good), "the last set that passed is the result");
        if bad.is_empty() {
            assert_eq!(checks, 1);
        }
    }

    #[test]
    fn finds_every_offender_and_keeps_the_others() {
        check(0, &[]);
        check(1, &[]);
        check(1, &[0]);
        check(5, &[]);
        check(5, &[4]);
        check(5, &[0, 4]);
        check(7, &[0, 1, 2, 3, 4, 5, 6]);
        for n in [2, 3, 8, 33] {
            for i in 0..n {
                check(n, &[i]);
                let mut two = vec![i, (i * 7 + 3) % n];
                two.sort_unstable();
                two.dedup();
                check(n, &two);
            }
        }
    }

    #[test]
    fn a_template_that_fails_without_members_is_at_fault() {
        assert_eq!(run(0, |_| false).0, Step::TemplateFault);
        let (step, checks, _) = run(10, |_| false);
        assert_eq!((step, checks), (Step::TemplateFault, 2));
    }

    #[test]
    fn one_offender_among_a_thousand_takes_few_checks() {
        let (step, checks, _) = run(1000, |set| !set.contains(&617));
        assert_eq!(step, Step::Done { bad: vec![617] });
        assert!(checks <= 2 + 2 * 10, "{checks} checks");
    }

    #[test]
    fn the_same_question_until_answered() {
        let mut b = Bisect::new(3);
        assert_eq!(b.step(), Step::Check(vec![0, 1, 2]));
        assert_eq!(b.step(), Step::Check(vec![0, 1, 2]));
        b.answer(false);
        assert_eq!(b.step(), Step::Check(vec![]));
    }
}
