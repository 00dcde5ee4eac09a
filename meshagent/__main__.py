from meshagent.cli import main

raise SystemExit(main())
