"""Framework-free building blocks of the federated loop (Flower adapters live in clients/, server/)."""
