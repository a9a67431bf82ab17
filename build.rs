// The migrations are compiled into the binary (`sqlx::migrate!`): rebuild when one
// changes, not only when Rust source does.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
