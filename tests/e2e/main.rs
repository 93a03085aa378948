//! The end-to-end tests: the real `formation` binary on CI-sized configs, each test in a fresh temp directory,
//! one module per concern. They are one test binary because each integration-test binary links the whole
//! stack (burn included): eleven of them cost about 25 s of linking per build, one costs about 3 s.

mod common;

mod analyze;
mod cli;
mod crash;
mod features;
mod llc;
mod report;
mod serve;
mod slurm;
mod study;
mod tasks;
mod trace;
mod trackers;
mod windows;
mod zoo;
