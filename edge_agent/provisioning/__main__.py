from edge_agent.provisioning.cli import main

raise SystemExit(main())
