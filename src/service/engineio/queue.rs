//! Packets of a polling session waiting for the next GET.

/// Packets waiting for the next GET, with their total size kept (the byte limit is checked
/// on every push).
#[derive(Default, Debug)]
pub struct PacketQueue {
    packets: Vec<Box<str>>,
    bytes: usize,
}

impl PacketQueue {
    pub fn push(&mut self, packet: Box<str>) {
        self.bytes += packet.len();
        self.packets.push(packet);
    }
    pub fn len(&self) -> usize {
        self.packets.len()
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.packets.iter().map(|p| &**p)
    }
    /// Everything queued, in order; the queue is left empty.
    pub fn take(&mut self) -> Vec<Box<str>> {
        self.bytes = 0;
        std::mem::take(&mut self.packets)
    }
}
