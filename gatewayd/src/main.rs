fn main() {
    println!("gatewayd");
}
