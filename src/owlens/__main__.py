from owlens.cli import main

raise SystemExit(main())
