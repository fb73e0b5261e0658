//! Gateway tests.
