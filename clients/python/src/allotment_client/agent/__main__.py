from allotment_client.agent.cli import main

main()
