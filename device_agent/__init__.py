"""The device agent: capture, choose the split with the ECD utility, run blocks [0, b_d), stream."""
