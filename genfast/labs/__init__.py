"""Each lab's check helpers, one module per lab (as ARENA's tests.py): they take the learner's
function as an argument and compare it with a plain PyTorch spec or with expected outputs
shipped in genfast/fixtures (where the spec would itself be the answer). The grader runs
private copies of the same helpers in every hidden test (`autograder.grader`)."""
