//! Rebuilds the crate when a migration is added or changed.

fn main() {
    // `sqlx::migrate!` embeds the migration folders at compile time, but
    // cargo does not notice a new file in them by itself: without this a
    // build after adding a migration would silently ship the old set.
    println!("cargo:rerun-if-changed=migrations");
}
