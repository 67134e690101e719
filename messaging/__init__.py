"""The messaging layer: settings, topology, codec, connections and confirmed publishing."""
