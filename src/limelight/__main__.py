from limelight.cli import main

raise SystemExit(main())
