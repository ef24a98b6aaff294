"""One cell of a sweep: load, retrieve, train, predict, score, cost. Imports core and metrics."""
