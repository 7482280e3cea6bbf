//! The metadata server emulator.
