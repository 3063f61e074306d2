from avatar_bridge.cli import main

raise SystemExit(main())
