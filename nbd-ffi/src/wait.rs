
#[cfg(test)]
mod tests {
    use super::{Bits, EdgeReg};

    #[test]
    fn edge_state_keeps_flags_and_registration_apart() {
        let mut e = EdgeReg(EdgeReg::NONE.0);
        assert!(e.rx_maybe(), "input may be waiting at first");
        assert!(!e.rx_hup() && !e.tx_full());
        e.set_tx_full(true);
        e.set_rx_hup(true);
        e.set_rx_maybe(false);
        // A wait registers the socket in poller 7 for writing too.
        let mut b = e.bits();
        b.register(7, true);
        assert_eq!((b.poller(), b.write()), (7, true));
        // Meanwhile another thread changed a flag: the registration taken
        // back must not undo it.
        e.set_rx_maybe(true);
        e.take_registration(b);
        assert_eq!((e.bits().poller(), e.bits().write()), (7, true));
        assert!(e.rx_maybe() && e.rx_hup() && e.tx_full());
        let mut b = e.bits();
        b.register(EdgeReg::POLLER, false);
        assert_eq!((b.poller(), b.write()), (EdgeReg::POLLER, false));
        assert!(Bits(b.0).0 & EdgeReg::TX_FULL != 0, "flags survive");
        // Not registered: dropping it releases nothing.
        e.0 = EdgeReg::NONE.0;
    }
}
