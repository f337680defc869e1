package deploycheck

import "path/filepath"

// repoRoot is the edgebridge repository, seen from tools/deploycheck.
var repoRoot = filepath.Join("..", "..")
