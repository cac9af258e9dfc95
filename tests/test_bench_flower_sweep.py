"""The Flower engine sweep benchmark runs on Flower's own classes (it breaks loudly when a
Flower upgrade changes them)."""

from experiments import bench_flower_sweep


def test_one_sweep_delivers_each_stored_message_once() -> None:
    seconds, delivered = bench_flower_sweep.sweep_seconds(50, 10)
    assert delivered == 10 and seconds > 0


def test_the_benchmark_prints_every_size(capsys) -> None:
    assert bench_flower_sweep.main(["--nodes", "30", "--messages", "0", "5", "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [["30", "0"], ["30", "5"]]
